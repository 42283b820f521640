/* Accessible names the Django admin's own widgets leave out (axe, tests/test_browser.py):
 * - a date-and-time field is two inputs and Django labels neither (MultiWidget has
 *   no id_for_label): each gets "<field label> date" / "time";
 * - the filter boxes of a many-to-many field (SelectFilter2.js, built on load) put
 *   aria-label on a bare span: it gets role="img", which may carry one.
 * Runs on every admin page (templates/admin/base_site.html); changes nothing else. */
'use strict';
(function () {
  function labelDateTimes() {
    for (const input of document.querySelectorAll('input.vDateField, input.vTimeField')) {
      if (input.labels.length || input.hasAttribute('aria-label')) continue;
      const row = input.closest('.form-row, .fieldBox, td, .flex-container');
      const label = row && row.querySelector('label');
      const name = label ? label.textContent.replace(/:\s*$/, '').trim() : input.name;
      input.setAttribute('aria-label', name + (input.classList.contains('vDateField') ? ' date' : ' time'));
    }
  }
  function nameTooltips() {
    for (const span of document.querySelectorAll('span[aria-label]:not([role])')) {
      span.setAttribute('role', 'img');
    }
  }
  document.addEventListener('DOMContentLoaded', labelDateTimes);
  window.addEventListener('load', nameTooltips);  // after SelectFilter2.js built its boxes
})();
