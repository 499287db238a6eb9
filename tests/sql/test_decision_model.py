"""Decisions agree with a model of what they mean, whatever their order: random sequences of approve, reject and
clear (on row sets, every row, one style or both), alt text edits and "approve everything that needs no eyes", on a
batch with look-alike variants (a decision on a shared image is a decision on every row showing it), failed rows
and rows with one image. After every step the stored states and alt texts, and the count each call returns, are
the model's: a bulk decision never loses an edited alt text, never touches a row it should not."""

from __future__ import annotations

import random
import uuid

import psycopg
import pytest
from support.helpers import USER_A, completed_batch

from csvjobs.operate import queries

ROWS = 40
STYLES = ("lifestyle_emotional", "single_white_background")
STATE = {"approve": "approved", "reject": "rejected", "clear": "unreviewed"}


def _shape(conn: psycopg.Connection, batch: uuid.UUID) -> tuple[dict[int, int], set[int], dict[int, set[str]]]:
    """Every 5th row a variant of the row before, every 9th failed, every 7th with its white image only."""
    owners = {n: n - 1 for n in range(5, ROWS + 1, 5)}
    failed = set(range(9, ROWS + 1, 9))
    images = {n: ({"single_white_background"} if n % 7 == 0 else set(STYLES)) for n in range(1, ROWS + 1)}
    with conn.transaction():
        conn.execute("UPDATE csv_row_jobs SET generated_images = jsonb_path_query_array(generated_images,"
                     " '$[*] ? (@.style == \"single_white_background\")') WHERE batch_id = %s AND row_number %% 7 = 0",
                     [batch])
        conn.execute("UPDATE csv_row_jobs SET status = 'failed' WHERE batch_id = %s AND row_number %% 9 = 0", [batch])
        conn.execute("UPDATE csv_row_jobs j SET reuses_job = o.id,"
                     " usage = jsonb_build_object('reuses_row', o.row_number) FROM csv_row_jobs o"
                     " WHERE j.batch_id = %s AND o.batch_id = j.batch_id"
                     " AND j.row_number %% 5 = 0 AND o.row_number = j.row_number - 1", [batch])
    return owners, failed, images


def _sharing(named: set[int], owners: dict[int, int]) -> set[int]:
    """The rows named, the rows their variants reuse, and the variants of both."""
    rows = set(named) | {owners[n] for n in named if n in owners}
    return rows | {v for v, o in owners.items() if o in rows}


def _stored(conn: psycopg.Connection, batch: uuid.UUID) -> tuple[dict, dict]:
    states, alts = {}, {}
    for row in conn.execute("SELECT j.row_number, r.review FROM csv_row_jobs j LEFT JOIN csv_row_reviews r"
                            " ON r.row_job_id = j.id WHERE j.batch_id = %s", [batch]).fetchall():
        for style in STYLES:
            entry = (row["review"] or {}).get(style) or {}
            states[(row["row_number"], style)] = entry.get("state", "unreviewed")
            if entry.get("alt_text"):
                alts[(row["row_number"], style)] = entry["alt_text"]
    return states, alts


@pytest.mark.parametrize("seed", range(5))
def test_random_decisions_match_the_model(conn: psycopg.Connection, seed: int) -> None:
    rng = random.Random(seed)
    batch = completed_batch(conn, ROWS)
    owners, failed, images = _shape(conn, batch)
    every = set(range(1, ROWS + 1))
    states = {(n, s): "unreviewed" for n in every for s in STYLES}
    alts: dict[tuple[int, str], str] = {}
    for step in range(30):
        kind = rng.choice(["decide", "decide", "decide", "all", "alt", "unflagged"])
        named = set(rng.sample(sorted(every), rng.randint(1, 12)))
        style = rng.choice([None, *STYLES])
        if kind in ("decide", "all"):
            action = rng.choice(list(STATE))
            rows = every if kind == "all" else _sharing(named, owners)
            expected = 0
            for n in rows - failed:
                for s in ([style] if style else STYLES):
                    if s in images[n] and states[(n, s)] != STATE[action]:
                        states[(n, s)] = STATE[action]
                        expected += 1
            got = queries.review_images(conn, USER_A, batch, None if kind == "all" else sorted(named), style, action)
        elif kind == "alt":
            s = style or STYLES[0]
            text = rng.choice(["", f"text {step}"])
            expected = len(_sharing(named, owners) - failed)
            for n in _sharing(named, owners) - failed:
                if text:
                    alts[(n, s)] = text
                else:
                    alts.pop((n, s), None)
            got = queries.set_alt_text(conn, USER_A, batch, sorted(named), s, text)
        else:
            expected = 0
            for n in every - failed:
                for s in STYLES:
                    if s in images[n] and states[(n, s)] == "unreviewed":
                        states[(n, s)] = "approved"
                        expected += 1
            got = queries.approve_unflagged(conn, USER_A, batch)
        assert got == expected, (seed, step, kind)
        assert _stored(conn, batch) == (states, alts), (seed, step, kind)
