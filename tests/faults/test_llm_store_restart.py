"""The LLM answer store on PostgreSQL heals after a server restart: the statement that finds its
connection dead fails, the next one runs on a new connection and sees what was stored before."""

from __future__ import annotations

import psycopg
import pytest
from pg_cluster import PgCluster

from classifiers.llm._store import Store

pytestmark = pytest.mark.postgres


def test_the_llm_store_reconnects_after_a_restart(pg_cluster: PgCluster) -> None:
    answer = {"raw_answer": '{"category_id": "x"}', "answer_p": 0.9, "tokens_in": 12, "tokens_out": 3}
    with Store(pg_cluster.url) as store:
        store.cache_put("k1", model="m", mode="json", finish_reason="stop", **answer)  # type: ignore[arg-type]
        pg_cluster.restart(down_seconds=0.2)
        with pytest.raises(psycopg.OperationalError):
            store.cache_get("k1")  # this connection died with the server
        got = store.cache_get("k1")  # healed: a new connection
        assert got is not None and got["raw_answer"] == answer["raw_answer"]
        store.cache_put("k2", model="m", mode="json", finish_reason="stop", **answer)  # type: ignore[arg-type]
        assert store.cache_get("k2") is not None
