"""What both roles' consoles show, written once: ages, exact times and badges
(`console.formatting`) and the page that shows a new token once
(templates/admin/token_once.html)."""
