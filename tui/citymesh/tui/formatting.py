"""Turning API values into text for people: dates, ratings, a practice as Markdown."""

from __future__ import annotations

import datetime

from citymesh.protocol import api
from citymesh.protocol.records import PracticeBody

from . import labels

PREFERRED_LANGUAGE = "en"


def best_text(texts: dict[str, str], language: str = PREFERRED_LANGUAGE) -> str:
    """The text in ``language``, else in English, else the first one there is."""
    return texts.get(language) or texts.get("en") or next(iter(texts.values()), "")


def when(moment: datetime.datetime | datetime.date | None, today: datetime.date) -> str:
    """A day relative to ``today`` ("today", "3 days ago"), else the ISO date."""
    if moment is None:
        return "–"
    day = moment.date() if isinstance(moment, datetime.datetime) else moment
    days = (today - day).days
    if days == 0:
        return "today"
    if days == 1:
        return "yesterday"
    if 1 < days < 30:
        return f"{days} days ago"
    return day.isoformat()


def age(moment: datetime.datetime, today: datetime.date) -> str:
    """A compact age for a table column: "today", "3d", "5w", "4mo", "2y"."""
    days = (today - moment.date()).days
    if days <= 0:
        return "today"
    if days < 14:
        return f"{days}d"
    if days < 60:
        return f"{days // 7}w"
    if days < 730:
        return f"{days // 30}mo"
    return f"{days // 365}y"


def rating_text(rating: api.RatingSummary) -> str:
    """Mean and count, "4.3★(5)"; below the network's minimum count the mean stays hidden,
    "– (2)"."""
    if rating.count == 0:
        return "–"
    if rating.mean is None:
        return f"– ({rating.count})"
    return f"{rating.mean:.1f}★({rating.count})"


def stars(score: int | None, out_of: int = 5) -> str:
    score = score or 0
    return "★" * score + "☆" * (out_of - score)


def city_text(city: str | None, country: str | None) -> str:
    name = city or "unknown city"
    return f"{name} ({country})" if country else name


def _md_escape(text: str) -> str:
    """Keep a one-line value from starting Markdown structure of its own."""
    return text.replace("\n", " ").replace("|", "\\|")


def practice_markdown(
    body: PracticeBody,
    *,
    city: str | None,
    country: str | None,
    today: datetime.date,
    updated: datetime.datetime | None = None,
) -> str:
    """The whole practice as one Markdown document, the way a coordinator reads it."""
    out: list[str] = [f"# {_md_escape(best_text(body.title))}", ""]
    facts = [f"**{_md_escape(city_text(city, country))}**", labels.practice_status(body.status)]
    if body.period.start:
        span = f"since {body.period.start.isoformat()}"
        if body.period.end:
            span = f"{body.period.start.isoformat()} to {body.period.end.isoformat()}"
        facts.append(span)
    if updated is not None:
        facts.append(f"updated {when(updated, today)}")
    out += [" · ".join(facts), ""]
    summary = best_text(body.summary)
    if summary:
        out += [f"> {_md_escape(summary)}", ""]
    out.append("**Sectors:** " + ", ".join(labels.sector(s) for s in body.sectors) + "  ")
    if body.target_groups:
        out.append(
            "**For:** " + ", ".join(labels.target_group(t) for t in body.target_groups) + "  "
        )
    if body.sample:
        out.append("*Sample data for demonstrations, not a real practice.*  ")
    out.append("")
    if body.description:
        out += [body.description, ""]
    if body.results:
        out += ["## Results", "", "| Result | Value | Baseline |", "|---|---|---|"]
        for r in body.results:
            value = "" if r.value is None else f"{r.value:g} {r.unit}".strip()
            base = "" if r.baseline is None else f"{r.baseline:g} {r.unit}".strip()
            out.append(f"| {_md_escape(r.label)} | {value} | {base} |")
        out.append("")
    if body.evaluation.type != "none" or body.evaluation.summary:
        out += ["## Evaluation", "", f"*{body.evaluation.type}*", ""]
        if body.evaluation.summary:
            out += [body.evaluation.summary, ""]
    if body.lessons:
        out += ["## Lessons", "", body.lessons, ""]
    t = body.transferability
    if t.preconditions or t.adaptable_elements or t.key_success_factors:
        out += ["## Transferring it", ""]
        for title, items in (
            ("Preconditions", t.preconditions),
            ("What can be adapted", t.adaptable_elements),
            ("Key success factors", t.key_success_factors),
        ):
            if items:
                out += [f"**{title}**", ""] + [f"- {_md_escape(i)}" for i in items] + [""]
    if body.actors:
        out += ["## Who is involved", ""]
        out += [f"- {_md_escape(a.name)} ({a.role}, {a.type})" for a in body.actors] + [""]
    res = body.resources
    if res.budget_band or res.funding or res.staff_fte is not None or res.notes:
        out += ["## Resources", ""]
        if res.budget_band:
            out.append(f"- Budget: {res.budget_band.replace('_', ' ')} EUR")
        if res.funding:
            out.append("- Funding: " + ", ".join(res.funding))
        if res.staff_fte is not None:
            out.append(f"- Staff: {res.staff_fte:g} FTE")
        if res.notes:
            out.append(f"- {_md_escape(res.notes)}")
        out.append("")
    out += ["## Contact", "", f"`{body.contact.role_mailbox}`"]
    if body.contact.role:
        out[-1] += f" ({_md_escape(body.contact.role)})"
    if body.contact.languages:
        out[-1] += " · languages: " + ", ".join(body.contact.languages)
    out.append("")
    footer = [f"Licence {body.licence}"]
    if body.review_by:
        footer.append(f"review by {body.review_by.isoformat()}")
    out.append(" · ".join(footer))
    return "\n".join(out) + "\n"
