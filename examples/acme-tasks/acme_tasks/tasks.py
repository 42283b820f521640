"""Two handlers of an imaginary team: text statistics and invoice totals.

Nothing here imports Meridian beyond its public handler API, and nothing needs
Django or Celery: the tests call the functions directly.
"""
from __future__ import annotations

import re
from collections import Counter
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation

from meridian_client import Context, HandlerError, handler

WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)*", re.UNICODE)
SENTENCE_END = re.compile(r"[.!?]+(?:\s|$)")
STOPWORDS = frozenset("a an and are as at be but by for from in is it of on or that the this to was were with".split())


@handler("text_stats", version="1.2.0", timeout=60, payload_schema={
    "type": "object",
    "required": ["text"],
    "additionalProperties": False,
    "properties": {
        "text": {"type": "string", "maxLength": 2_000_000},
        "top": {"type": "integer", "minimum": 1, "maximum": 100},
        "skip_stopwords": {"type": "boolean"},
    },
})
def text_stats(payload: dict, ctx: Context) -> dict:
    """Words, sentences, vocabulary, reading time and the most frequent words."""
    text = payload["text"]
    words = [w.lower() for w in WORD.findall(text)]
    counted = Counter(w for w in words if not (payload.get("skip_stopwords", True) and w in STOPWORDS))
    sentences = len(SENTENCE_END.findall(text)) or (1 if words else 0)
    return {
        "words": len(words),
        "unique_words": len(set(words)),
        "sentences": sentences,
        "average_word_length": round(sum(map(len, words)) / len(words), 2) if words else 0,
        "words_per_sentence": round(len(words) / sentences, 2) if sentences else 0,
        "reading_seconds": round(len(words) / 238 * 60),  # 238 words a minute, silent reading
        "top": [[word, n] for word, n in counted.most_common(payload.get("top", 5))],
        "agent": ctx.agent_id,
    }


CURRENCY_EXPONENT = {"EUR": 2, "USD": 2, "GBP": 2, "JPY": 0, "CHF": 2}


@handler("invoice_total", version="2.0.1", timeout=30, payload_schema={
    "type": "object",
    "required": ["currency", "lines"],
    "properties": {
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "lines": {
            "type": "array", "minItems": 1, "maxItems": 10_000,
            "items": {
                "type": "object",
                "required": ["description", "quantity", "unit_price"],
                "properties": {
                    "description": {"type": "string", "minLength": 1, "maxLength": 200},
                    "quantity": {"type": "number", "exclusiveMinimum": 0},
                    "unit_price": {"type": "string", "pattern": r"^-?[0-9]+(\.[0-9]+)?$"},
                    "tax_rate": {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?$"},
                },
            },
        },
        "discount_percent": {"type": "number", "minimum": 0, "maximum": 100},
    },
})
def invoice_total(payload: dict, ctx: Context) -> dict:
    """Exact money arithmetic (Decimal, banker's rounding per line and per tax
    rate), as an invoice must add up. Prices are strings: a float is not money."""
    currency = payload["currency"]
    if currency not in CURRENCY_EXPONENT:
        raise HandlerError(f"currency {currency} is not invoiced here ({', '.join(sorted(CURRENCY_EXPONENT))})")
    cent = Decimal(1).scaleb(-CURRENCY_EXPONENT[currency])
    discount = (Decimal(100) - Decimal(str(payload.get("discount_percent", 0)))) / 100
    net = Decimal(0)
    taxes: dict[str, Decimal] = {}
    for number, line in enumerate(payload["lines"], start=1):
        try:
            amount = (Decimal(str(line["quantity"])) * Decimal(line["unit_price"]) * discount).quantize(
                cent, ROUND_HALF_EVEN)
            rate = Decimal(line.get("tax_rate", "0"))
        except InvalidOperation:
            raise HandlerError(f"line {number}: not a number") from None
        net += amount
        key = f"{rate.normalize():f}%"
        taxes[key] = taxes.get(key, Decimal(0)) + amount * rate / 100
    tax = {rate: str(value.quantize(cent, ROUND_HALF_EVEN)) for rate, value in sorted(taxes.items())}
    total = net + sum(Decimal(v) for v in tax.values())
    return {"currency": currency, "lines": len(payload["lines"]), "net": str(net), "tax": tax,
            "total": str(total.quantize(cent, ROUND_HALF_EVEN))}


@handler("text_stats_merge", version="1.0.0", timeout=30, payload_schema={
    "type": "object",
    "required": ["results"],
    "properties": {"results": {"type": "array", "maxItems": 100}, "top": {"type": "integer", "minimum": 1}},
})
def text_stats_merge(payload: dict, ctx: Context) -> dict:
    """The join of a workflow (acme_tasks/workflow.py): ``results`` holds the
    text_stats result of every member of the group before it, in order."""
    results = payload["results"]
    if not all(isinstance(r, dict) and "words" in r for r in results):
        raise HandlerError("results must be text_stats results (each with words, sentences, top)")
    top: Counter = Counter()
    for result in results:
        top.update({word: n for word, n in result.get("top", [])})
    words = sum(r["words"] for r in results)
    return {"parts": len(results), "words": words, "sentences": sum(r["sentences"] for r in results),
            "reading_seconds": round(words / 238 * 60),
            "top": [[word, n] for word, n in top.most_common(payload.get("top", 5))]}
