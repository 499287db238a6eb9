"""The shop's own language: a batch's language is chosen at upload (the option, a localised export's headers, the
products' text, else English, saying which and why), stored and shown, gives the rows a country when the file has
none, and is what the prompt model is told (by name and tag) on both paths; extra alt-text languages come back in
the same call and reach the exports."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from support.helpers import REAL_DATA, cli, upload
from support.pool import work

pytestmark = pytest.mark.slow


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    """The CLI's environment without the suite's default language: these tests are about choosing one."""
    return {k: v for k, v in env.items() if k != "CSVJOBS_LANGUAGE"}


@pytest.fixture
def openai_env(openai_env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in openai_env.items() if k != "CSVJOBS_LANGUAGE"}


def chats(fake) -> list[str]:
    return [json.dumps(c.body["messages"], ensure_ascii=False) for c in fake.calls
            if c.endpoint in ("chat", "batch_chat") and c.status == 200]


@pytest.mark.skipif(not REAL_DATA.exists(), reason="shared/data/real is not present")
def test_the_brazilian_export_is_written_for_brazil(openai_env, fake, conn) -> None:
    report = upload(openai_env, REAL_DATA / "woocommerce_ptbr_products.csv")
    assert report["language"] == "pt-BR" and report["language_source"] == "headers"
    assert report["country_from_language"] == "BR"
    shown = cli(openai_env, "upload", str(REAL_DATA / "woocommerce_ptbr_products.csv"), "--dry-run")
    assert "language: pt-BR (Portuguese (Brazil)), from the WooCommerce export's own column names" in shown.stdout
    assert "country BR for every row, from the language's region" in shown.stdout
    work(openai_env)
    asked = chats(fake)
    assert asked and all("Shop language: Portuguese (Brazil) (pt-BR)" in c and "Country: BR" in c for c in asked)
    listed = json.loads(cli(openai_env, "batches", "--json").stdout)
    assert [b["language"] for b in listed if b["batch_id"] == report["batch_id"]] == ["pt-BR"]
    triggers = conn.execute("SELECT trigger_text FROM csv_row_jobs WHERE batch_id = %s", [report["batch_id"]])
    assert all(t["trigger_text"].startswith("BR ") for t in triggers)


@pytest.mark.skipif(not REAL_DATA.exists(), reason="shared/data/real is not present")
def test_the_english_shopify_sample_is_english(env) -> None:
    report = json.loads(cli(env, "upload", str(REAL_DATA / "shopify_product_template.csv"), "--dry-run",
                            "--json").stdout)
    assert report["language"] == "en" and report["language_source"] == "text"


def test_german_texts_read_as_german_and_the_option_wins(env, tmp_path: Path) -> None:
    path = tmp_path / "de.csv"
    path.write_text("title,description\n"
                    "Glasierte Keramiktasse,Eine schöne Tasse aus Keramik für den Morgenkaffee und den Tee\n"
                    "Salatschüssel aus Holz,Große Schüssel aus Eichenholz für Salate und frisches Obst\n"
                    "Leinen-Tischdecke,Gewaschenes Leinen in Naturfarben für den Esstisch der ganzen Familie\n",
                    encoding="utf-8")
    report = upload(env, path, "--dry-run")
    assert report["language"] == "de" and report["language_source"] == "text"
    assert report["country_from_language"] is None  # "de" names no region: no country is guessed
    forced = upload(env, path, "--dry-run", "--language", "fr")
    assert forced["language"] == "fr" and forced["language_source"] == "option"
    bad = cli(env, "upload", str(path), "--language", "not a tag")
    assert bad.returncode == 2 and "is not a language tag" in bad.stderr and "Traceback" not in bad.stderr


def test_a_file_of_skus_falls_back_to_english_and_says_so(env, tmp_path: Path) -> None:
    path = tmp_path / "skus.csv"
    path.write_text("title,mpn\nA-100,A-100\nB-200 XL,B-200\n", encoding="utf-8")
    shown = cli(env, "upload", str(path), "--dry-run")
    assert shown.returncode == 0, shown.stderr
    assert "language: en (English), the default: the titles and descriptions are too short to tell" in shown.stdout


def test_extra_alt_text_languages_come_back_in_the_same_call_and_reach_the_exports(openai_env, fake,
                                                                                   tmp_path: Path) -> None:
    path = tmp_path / "mugs.csv"
    path.write_text("title,description,country\nMug,A glazed stoneware mug for morning coffee,US\n"
                    "Bowl,A wide wooden salad bowl for the family table,US\n", encoding="utf-8")
    report = upload(openai_env, path, "--language", "en-US", "--alt-languages", "es,pt-br")
    assert report["alt_languages"] == ["es", "pt-BR"] and report["country_from_language"] is None
    work(openai_env)
    asked = chats(fake)
    assert len(asked) == 2 and all("Alt text languages: es, pt-BR." in c for c in asked)
    out = tmp_path / "rows.csv"
    assert cli(openai_env, "export", report["batch_id"], "--format", "csv", "-o", str(out)).returncode == 0
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [r["lifestyle_emotional_alt_text_es"] for r in rows] == ["in use [es]"] * 2
    assert [r["single_white_background_alt_text_pt-BR"] for r in rows] == ["on white [pt-BR]"] * 2
    assert [r["lifestyle_emotional_alt_text"] for r in rows] == ["in use [en-US]"] * 2
    out = tmp_path / "rows.jsonl"
    assert cli(openai_env, "export", report["batch_id"], "--format", "jsonl", "-o", str(out)).returncode == 0
    record = json.loads(out.read_text(encoding="utf-8").splitlines()[0])
    assert record["lifestyle_emotional_alt_text_pt-BR"] == "in use [pt-BR]"


def test_the_batch_api_path_asks_in_the_batch_language(openai_env, fake, tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("title,description\nMug,a mug\n", encoding="utf-8")
    upload(openai_env, path, "--language", "de-AT", "--openai-batch")
    work(dict(openai_env, CSVJOBS_OPENAI_BATCH_POLL_SECONDS="0.3", CSVJOBS_POLL_SECONDS="0.3"))
    asked = chats(fake)
    assert asked and all("Shop language: German (Austria) (de-AT)" in c and "Country: AT" in c for c in asked)
