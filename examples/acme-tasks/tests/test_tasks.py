"""The handlers are plain functions: tested by calling them, no server needed."""
import pytest
from meridian_client import Context, HandlerError, registered

from acme_tasks.tasks import invoice_total, text_stats

CTX = Context(task_id="t-1", attempt=1, agent_id="test")


def test_text_stats_counts_words_sentences_and_top_words():
    out = text_stats({"text": "The cat sat. The cat ran! A dog?", "top": 2}, CTX)
    assert out["words"] == 8 and out["sentences"] == 3 and out["unique_words"] == 6
    assert out["top"] == [["cat", 2], ["sat", 1]]


def test_text_stats_keeps_stopwords_when_asked():
    assert text_stats({"text": "the the cat", "top": 1, "skip_stopwords": False}, CTX)["top"] == [["the", 2]]


def test_invoice_total_adds_up_exactly_per_tax_rate():
    out = invoice_total({"currency": "EUR", "lines": [
        {"description": "widget", "quantity": 3, "unit_price": "19.99", "tax_rate": "20"},
        {"description": "book", "quantity": 1, "unit_price": "12.50", "tax_rate": "5.5"},
    ]}, CTX)
    assert out == {"currency": "EUR", "lines": 2, "net": "72.47", "tax": {"20%": "11.99", "5.5%": "0.69"},
                   "total": "85.15"}


def test_invoice_total_applies_the_discount_before_tax():
    out = invoice_total({"currency": "JPY", "discount_percent": 10,
                         "lines": [{"description": "tea", "quantity": 2, "unit_price": "1000", "tax_rate": "8"}]},
                        CTX)
    assert out["net"] == "1800" and out["total"] == "1944"


def test_invoice_total_refuses_an_unknown_currency_for_good():
    with pytest.raises(HandlerError, match="XTS"):
        invoice_total({"currency": "XTS", "lines": [{"description": "x", "quantity": 1, "unit_price": "1"}]}, CTX)


def test_handlers_declare_version_timeout_and_schema():
    spec = registered()["invoice_total"]
    assert spec.version == "2.0.1" and spec.timeout == 30
    assert spec.payload_schema["required"] == ["currency", "lines"]


def test_text_stats_merge_joins_the_results_of_a_group():
    from acme_tasks.tasks import text_stats_merge
    from acme_tasks.workflow import report_steps

    parts = ["The cat sat. The cat ran!", "A dog? A cat."]
    steps = report_steps(parts, top=2)
    assert [m["payload"]["text"] for m in steps[0]["group"]] == parts and steps[1]["capability"] == "text_stats_merge"
    results = [text_stats({"text": part, "top": 2}, CTX) for part in parts]
    merged = text_stats_merge({"top": 2, "results": results}, CTX)
    assert (merged["parts"], merged["words"], merged["sentences"]) == (2, 10, 4)
    assert merged["top"][0] == ["cat", 3]
    with pytest.raises(HandlerError):
        text_stats_merge({"results": [{"nope": 1}]}, CTX)
