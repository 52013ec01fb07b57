"""Search-as-you-type over the real Shopify taxonomy in English and Korean (GET /api/taxonomy/search)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from review_app_support import login

CURTAINS = "gid://shopify/TaxonomyCategory/hg-3-74-1-1"
BACKPACKS = "gid://shopify/TaxonomyCategory/lb-1"


def test_korean_query_finds_the_shopify_node_with_its_korean_path(client: TestClient) -> None:
    login(client, "alice")
    body = client.get("/api/taxonomy/search", params={"q": "커튼"}).json()
    by_id = {r["id"]: r for r in body["results"]}
    assert CURTAINS in by_id
    assert (
        by_id[CURTAINS]["path"] == "Home & Garden > Decor > Window Treatments > Curtains & Drapes > Curtains"
    )
    assert (
        by_id[CURTAINS]["localized_path"] == "가정/원예 용품 > 실내 장식 > 창문 인테리어 > 커튼/휘장 > 커튼"
    )
    top = client.get("/api/taxonomy/search", params={"q": "배낭", "limit": 3}).json()["results"]
    assert top[0]["id"] == BACKPACKS and top[0]["path"] == "Luggage & Bags > Backpacks"
    assert top[0]["localized_path"] == "여행용 가방/가방 > 배낭"
    assert len(top) == 3


def test_english_prefix_and_path_queries(client: TestClient) -> None:
    login(client, "alice")
    first = client.get("/api/taxonomy/search", params={"q": "backp"}).json()["results"][0]
    assert first["id"] == BACKPACKS and first["localized_path"] == "여행용 가방/가방 > 배낭"
    hit = client.get("/api/taxonomy/search", params={"q": "Luggage & Bags > Backpacks"}).json()["results"][0]
    assert hit["id"] == BACKPACKS and hit["score"] > 0.9
    assert client.get("/api/taxonomy/search", params={"q": "qqxxzz"}).json()["results"] == []
    assert client.get("/api/taxonomy/search", params={"q": ""}).json()["results"] == []
    assert client.get("/api/taxonomy/search", params={"q": "x" * 201}).status_code == 422
    assert client.get("/api/taxonomy/search", params={"q": "bag", "limit": 0}).status_code == 422


def test_search_answers_every_kind_of_query_on_the_whole_shopify_tree(client: TestClient) -> None:
    """Single letters, Korean, multi-word and path fragments all answer with ranked results.

    Latency is a benchmark figure (benchmarks/taxonomy_search.py), not a timed test.
    """
    login(client, "alice")
    queries = [
        "a",
        "e",
        "s",
        "커",
        "커튼",
        "반려동물",
        "가방",
        "mobile phones",
        "bath tow",
        "> Decor >",
        "시계",
    ]
    for query in queries:
        resp = client.get("/api/taxonomy/search", params={"q": query, "limit": 12})
        assert resp.status_code == 200, query
        body = resp.json()
        assert 0 < len(body["results"]) <= 12, query
        scores = [r["score"] for r in body["results"]]
        assert scores == sorted(scores, reverse=True), query
        assert isinstance(body["took_ms"], int | float)
