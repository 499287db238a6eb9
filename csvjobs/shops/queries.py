"""The push ledger's SQL (csv_pushes, sql/migrations/010_pushes.sql), each call in its own committed transaction as
the user: what is written before the shop is asked is there whatever happens next."""

from __future__ import annotations

import uuid
from typing import Any

from csvjobs import db

LIVE = "state <> 'removed'"
_KEY = "shop = %s AND store = %s AND product_id = %s AND image_sha256 = %s"


class Ledger:
    """One push's view of the ledger: one shop, one store, one user."""

    def __init__(self, conn: db.Connection, user_id: uuid.UUID, shop: str, store: str) -> None:
        self.conn, self.user_id, self.shop, self.store = conn, user_id, shop, store

    def entry(self, product_id: str, sha: str) -> dict[str, Any] | None:
        """This image's live entry on this product, if any."""
        with db.user_transaction(self.conn, self.user_id):
            return self.conn.execute(f"SELECT * FROM csv_pushes WHERE {_KEY} AND {LIVE}",
                                     [self.shop, self.store, product_id, sha]).fetchone()

    def pushed_anywhere(self, sha: str) -> bool:
        """Whether this image is on some product of this store (what --dry-run, which asks no shop, can know)."""
        with db.user_transaction(self.conn, self.user_id):
            return self.conn.execute(
                "SELECT 1 FROM csv_pushes WHERE shop = %s AND store = %s AND image_sha256 = %s"
                " AND state IN ('attached', 'ready')", [self.shop, self.store, sha]).fetchone() is not None

    def earlier(self, batch_id: uuid.UUID, row_number: int, style: str, product_id: str,
                sha: str) -> list[dict[str, Any]]:
        """Earlier versions of this row's image of this style that are on this product (pushed, not removed)."""
        with db.user_transaction(self.conn, self.user_id):
            return self.conn.execute(
                "SELECT * FROM csv_pushes WHERE batch_id = %s AND row_number = %s AND style = %s AND shop = %s"
                " AND store = %s AND product_id = %s AND image_sha256 <> %s AND state IN ('attached', 'ready')"
                " ORDER BY id", [batch_id, row_number, style, self.shop, self.store, product_id, sha]).fetchall()

    def start(self, batch_id: uuid.UUID, row_number: int, style: str, product_id: str, sha: str) -> None:
        """Say, before the shop is asked, that this image is being added to this product."""
        with db.user_transaction(self.conn, self.user_id):
            self.conn.execute(
                "INSERT INTO csv_pushes (user_id, batch_id, row_number, style, image_sha256, shop, store, product_id,"
                " state) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, 'started')"
                " ON CONFLICT (shop, store, product_id, image_sha256) WHERE state <> 'removed'"
                " DO UPDATE SET state = 'started', media_id = NULL, error = NULL, updated_at = now()",
                [self.user_id, batch_id, row_number, style, sha, self.shop, self.store, product_id])

    def record(self, product_id: str, sha: str, state: str, media_id: str | None = None,
               error: str | None = None) -> None:
        """Move an image's entry on as the shop answered."""
        with db.user_transaction(self.conn, self.user_id):
            self.conn.execute(
                f"UPDATE csv_pushes SET state = %s, media_id = coalesce(%s, media_id), error = %s,"
                f" updated_at = now() WHERE {_KEY} AND {LIVE}",
                [state, media_id, error, self.shop, self.store, product_id, sha])

    def removed(self, entry_ids: list[int]) -> None:
        """Say these entries' media were taken off their product (--replace-pushed)."""
        with db.user_transaction(self.conn, self.user_id):
            self.conn.execute("UPDATE csv_pushes SET state = 'removed', updated_at = now() WHERE id = ANY(%s)",
                              [entry_ids])

    def lock(self) -> bool:
        """Hold this store's push lock for the session: two pushes to one store at once would both add."""
        row = self.conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0)) AS held",
                                [f"csvjobs-push:{self.shop}:{self.store}"]).fetchone()
        return bool(row and row["held"])
