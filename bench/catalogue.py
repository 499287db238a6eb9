"""A catalogue through OpenAI's Batch API end to end, as a merchant runs it: `csvjobs upload --openai-batch
--channel amazon` of a file of N rows (photos plain, cluttered or missing, as real exports have them), then
`csvjobs work --until-done` against the loopback OpenAI server (tests/support/fake_openai.py, each OpenAI batch
done 2 s after it is created) and a loopback photo server. Prints each phase's time (upload; the prompt and image
OpenAI batches from the first opened to the last collected; reading their output), when completed rows passed
25/50/75/100%, rows per second per core, the peak RSS of the largest csvjobs process, and image finishing against
a decode+encode baseline from the same run (bench/finishing.py's).

`--light` leaves out the photos and the channel: each image is then the loopback server's small one, finished at
its own size (no cut-out, no channel size), so a run measures what grows with the number of rows (upload, the
OpenAI batch files written and read, the queue, the counters) at 100,000 rows in a fraction of the full run's time.

    python bench/catalogue.py [--rows 10000] [--concurrency 4] [--rows-per-submission 1000] [--light]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg
from finishing import finishing_against_baseline
from harness import fresh_database, server
from psycopg.rows import dict_row

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from support.fake_openai import FakeOpenAI
from support.photo_server import PhotoServer


def write_catalogue(path: Path, rows: int, photos: str | None) -> None:
    """rows products: 40% with a plain photo (cut out), 30% with a cluttered one (edited), 30% without (all
    without when photos is None)."""
    with path.open("w", encoding="utf-8") as handle:
        handle.write("title,description,product_type,mpn,country,image_url\n")
        for n in range(1, rows + 1):
            kind = n % 10 if photos else 9
            photo = f"{photos}/mug.png?n={n}" if kind < 4 else f"{photos}/clutter.png?n={n}" if kind < 7 else ""
            handle.write(f"Mug {n},A glazed stoneware mug number {n},Mugs,MUG-{n:06d},US,{photo}\n")


class PeakMemory:
    """The highest VmHWM (peak resident set) of any csvjobs process, read from /proc every second: every process
    descended from this one (`csvjobs upload`, `csvjobs work` and the worker processes it spawns, whose command
    lines do not say "csvjobs"), never a PostgreSQL backend (whose command line names the csvjobs_bench database)."""

    def __init__(self) -> None:
        self.peak_kb = 0
        self.peak_of = ""
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    @staticmethod
    def _descendants() -> list[Path]:
        children: dict[int, list[int]] = {}
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                # (the command name is in parentheses and may hold spaces: the fields after it are fixed)
                stat = (proc / "stat").read_text()
                name = stat[stat.index("(") + 1:stat.rindex(")")]
                parent = int(stat[stat.rindex(")") + 2:].split()[1])
            except (OSError, ValueError):
                continue
            if not name.startswith(("postgres", "pg_ctl")):
                children.setdefault(parent, []).append(int(proc.name))
        found, todo = [], list(children.get(os.getpid(), []))
        while todo:
            pid = todo.pop()
            found.append(Path("/proc") / str(pid))
            todo.extend(children.get(pid, []))
        return found

    def _watch(self) -> None:
        while not self.stop.wait(1.0):
            for proc in self._descendants():
                try:
                    for line in (proc / "status").read_text().splitlines():
                        if line.startswith("VmHWM:") and int(line.split()[1]) > self.peak_kb:
                            self.peak_kb = int(line.split()[1])
                            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                            self.peak_of = "a worker process" if "spawn_main" in command else command[-60:]
                except OSError:
                    continue


def completion_times(url: str, rows: int, started: float, done: threading.Event) -> dict[int, float]:
    """Seconds after `started` at which completed rows first reached each quarter of the batch."""
    marks: dict[int, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            last = done.is_set()
            row = conn.execute("SELECT count(*) FROM csv_row_jobs WHERE status = 'completed'").fetchone()
            completed = row[0] if row else 0
            for quarter in (25, 50, 75, 100):
                if quarter not in marks and completed * 100 >= rows * quarter:
                    marks[quarter] = time.monotonic() - started
            if last:
                return marks
            done.wait(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--rows-per-submission", type=int, default=1000)
    parser.add_argument("--light", action="store_true", help="no photos and no channel (see above)")
    args = parser.parse_args()
    fake = FakeOpenAI(batch_delay=2.0).start()
    photos = PhotoServer().start()
    memory = PeakMemory()
    memory.thread.start()
    try:
        with server() as admin, fresh_database(admin) as url, tempfile.TemporaryDirectory() as home:
            csv_path = Path(home) / "catalogue.csv"
            write_catalogue(csv_path, args.rows, None if args.light else photos.base)
            env = dict(os.environ, CSVJOBS_DATABASE_URL=url, CSVJOBS_HOME=home, CSVJOBS_USER_ID=str(uuid.uuid4()),
                       OPENAI_API_KEY="sk-bench", OPENAI_BASE_URL=fake.base_url,
                       CSVJOBS_ALLOW_PRIVATE_IMAGE_HOSTS="127.0.0.1/32", CSVJOBS_OPENAI_BATCH_POLL_SECONDS="1",
                       CSVJOBS_OPENAI_BATCH_ROWS_PER_SUBMISSION=str(args.rows_per_submission))
            started = time.monotonic()
            channel = [] if args.light else ["--channel", "amazon"]
            subprocess.run([sys.executable, "-m", "csvjobs", "upload", str(csv_path), "--openai-batch", *channel,
                            "--language", "en"], env=env, check=True, stdout=subprocess.DEVNULL)
            upload_seconds = time.monotonic() - started
            finished = threading.Event()
            work_started = time.monotonic()
            marks: dict[int, float] = {}
            watcher = threading.Thread(target=lambda: marks.update(completion_times(url, args.rows, work_started,
                                                                                     finished)))
            watcher.start()
            subprocess.run([sys.executable, "-m", "csvjobs", "work", "--until-done", "--concurrency",
                            str(args.concurrency)], env=env, check=True, stderr=subprocess.DEVNULL)
            work_seconds = time.monotonic() - work_started
            finished.set()
            watcher.join()
            with psycopg.connect(url, row_factory=dict_row) as conn:
                phases = conn.execute(
                    "SELECT step, count(*) AS batches, extract(epoch FROM max(done_at) - min(created_at)) AS span,"
                    " extract(epoch FROM max(done_at - collecting_since)) AS longest_read,"
                    " extract(epoch FROM sum(done_at - collecting_since)) AS reading"
                    " FROM csv_openai_submissions GROUP BY step ORDER BY step DESC").fetchall()
                counts = conn.execute("SELECT status, count(*) AS n FROM csv_row_jobs GROUP BY status").fetchall()
                drivers = conn.execute("SELECT count(DISTINCT worker_instance) AS n FROM csv_processing_logs"
                                       " WHERE operation = 'openai_batch_submitted'").fetchone()
    finally:
        memory.stop.set()
        memory.thread.join()
        fake.stop()
        photos.stop()
    cores = os.cpu_count() or 1
    what = "no photos, no channel" if args.light else "40% plain photos, 30% cluttered, 30% none; --channel amazon"
    print(f"{args.rows} rows ({what}), Batch API, "
          f"--concurrency {args.concurrency}, {args.rows_per_submission} rows per submission, {cores} cores")
    print("rows: " + ", ".join(f"{c['status']} {c['n']}" for c in counts))
    print(f"upload: {upload_seconds:.1f} s ({args.rows / upload_seconds:.0f} rows/s)")
    for p in phases:
        print(f"{p['step']}: {p['batches']} OpenAI batch(es), first opened to last collected "
              f"{float(p['span']):.1f} s; reading output {float(p['reading'] or 0):.1f} s in all (longest "
              f"{float(p['longest_read'] or 0):.1f} s)")
    print(f"submissions driven by {drivers['n'] if drivers else 0} worker process(es)")
    print("completed rows: " + ", ".join(f"{q}% at {marks[q]:.0f} s" for q in sorted(marks)))
    print(f"work: {work_seconds:.1f} s = {args.rows / work_seconds:.1f} rows/s, "
          f"{args.rows / work_seconds / cores:.1f} rows/s per core")
    print(f"peak RSS of the largest csvjobs process: {memory.peak_kb / 1024:.0f} MB, {memory.peak_of}"
          " (target: under 300 MB)")
    if args.light:
        return
    done, base = finishing_against_baseline(2048)
    print(f"image finishing (2048 px white image for amazon+google): {done:.2f} s against decode+encode "
          f"{base:.2f} s (x{done / base:.1f})")


if __name__ == "__main__":
    main()
