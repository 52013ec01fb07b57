"""The one job state machine of the LLM arbiter (internal), used by live calls and the Batch API alike.

A job is one gated item. It starts at the candidate question (or at the taxonomy's roots when no
candidate is usable), and each validated answer moves it on::

    candidates --(option n)--------------------------------> done: accepted
               --("none of these")--> walk:1 (roots) --(child)--> walk:2 ... --(leaf / max depth)--> done
                                                      --("stop here")--> done: none_of_these_walked
    any step --(invalid / unknown answer)--> done: invalid_answer | unknown_category
    any step --(not sent: budget, endpoint down, transient error)--> done: skipped_budget | failed_transient

`JobMachine.drive` runs jobs in rounds: each job advances through cached answers until it needs a
question the cache cannot answer; ``admit`` decides whether that question may be sent (breaker, budget);
``send`` answers all waiting questions of the round (one live request per question, or one batch).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from classifiers.llm._prompt import (
    Option,
    Parsed,
    Question,
    RawAnswer,
    candidate_question,
    product_block,
    walk_question,
)
from classifiers.llm._settings import LLMSettings, LLMStatus

__all__: list[str] = []


@dataclass
class Step:
    """One question of a job and what became of it."""

    question: Question
    key: str
    mode: str
    raw: RawAnswer | None
    parsed: Parsed | None
    cached: bool
    cost: float
    latency_ms: float | None
    status: str


@dataclass(frozen=True)
class Refusal:
    """A question that got no answer: the job ends with ``status`` and ``reason``."""

    status: LLMStatus
    reason: str


@dataclass
class Job:
    sku_id: str
    product: str
    candidates: list[Option]
    top_id: str | None
    stage: str = "candidates"  # candidates | walk | done
    node: str | None = None
    depth: int = 0
    steps: list[Step] = field(default_factory=list)
    probs: list[float | None] = field(default_factory=list)
    status: str | None = None
    category_id: str | None = None
    reason: str = ""


class KnownIds:
    """``in`` test and node lookup against the taxonomy (unknown ids give None, never an exception)."""

    def __init__(self, taxonomy: Any) -> None:
        self.taxonomy = taxonomy

    def node(self, cid: str) -> Any | None:
        if cid not in self.taxonomy:
            return None
        return self.taxonomy.get(cid)

    def __contains__(self, cid: object) -> bool:
        return isinstance(cid, str) and self.node(cid) is not None


Lookup = Callable[[Question], Step | None]
Admit = Callable[[Question], Refusal | None]
Send = Callable[[Sequence[Question]], list[Step | Refusal]]
Unsent = Callable[[Question, str], Step]


class JobMachine:
    """Builds jobs from item rows and moves them on; knows the taxonomy, not the transport."""

    def __init__(self, settings: LLMSettings, taxonomy: Any, known: KnownIds) -> None:
        self.settings = settings
        self.taxonomy = taxonomy
        self.known = known

    def new(self, row: dict[str, Any]) -> Job:
        s = self.settings
        product = product_block(
            row, description_chars=s.max_description_chars, review_chars=s.max_review_chars
        )
        options: list[Option] = []
        seen: set[str] = set()
        for cand in row.get("candidates") or []:
            cid = cand.get("category_id") if isinstance(cand, dict) else None
            if cid is None or str(cid) in seen:
                continue
            node = self.known.node(str(cid))
            if node is None:
                continue  # a stale candidate: never shown, never accepted
            seen.add(str(cid))
            options.append(Option(len(options) + 1, node.id, node.path))
            if len(options) >= s.top_k:
                break
        job = Job(str(row["sku_id"]), product, options, options[0].category_id if options else None)
        if not options:
            job.stage, job.node, job.depth = "walk", None, 1
        return job

    def finish_all(self, jobs: Sequence[Job], status: LLMStatus, reason: str) -> None:
        for job in jobs:
            self._finish(job, status, reason)

    # the state machine -----------------------------------------------------------------------------
    def drive(self, jobs: Sequence[Job], *, lookup: Lookup, admit: Admit, send: Send, unsent: Unsent) -> None:
        """Run ``jobs`` to the end (see the module docstring)."""
        active = list(jobs)
        while active:
            waiting: list[tuple[Job, Question]] = []
            for job in active:
                q = self._next_question(job, lookup)
                if q is None:
                    continue
                refusal = admit(q)
                if refusal is not None:
                    self._refuse(job, q, refusal, unsent)
                    continue
                waiting.append((job, q))
            if not waiting:
                return
            outcomes = send([q for _, q in waiting])
            for (job, q), outcome in zip(waiting, outcomes, strict=True):
                if isinstance(outcome, Refusal):
                    self._refuse(job, q, outcome, unsent)
                else:
                    self._apply(job, outcome)
            active = [job for job, _ in waiting if job.stage != "done"]

    def _next_question(self, job: Job, lookup: Lookup) -> Question | None:
        """The job's next question the cache cannot answer (cached answers are applied on the way)."""
        while job.stage != "done":
            q = self._question(job)
            if q is None:
                # the walk reached a node without children (or an empty taxonomy): that node is the answer
                job.category_id = job.node
                self._finish(job, LLMStatus.NONE_OF_THESE_WALKED, job.reason or "walked to a leaf")
                return None
            step = lookup(q)
            if step is None:
                return q
            self._apply(job, step)
        return None

    def _refuse(self, job: Job, q: Question, refusal: Refusal, unsent: Unsent) -> None:
        job.steps.append(unsent(q, str(refusal.status)))
        walking = refusal.status is LLMStatus.SKIPPED_BUDGET and q.kind != "candidates"
        note = " (during the tree walk after 'none of these')" if walking else ""
        self._finish(job, refusal.status, refusal.reason + note)

    def _question(self, job: Job) -> Question | None:
        if job.stage == "candidates":
            return candidate_question(job.product, job.candidates)
        if job.stage != "walk":
            return None
        tax = self.taxonomy
        children = list(tax.roots() if job.node is None else tax.children(job.node))
        children = children[: self.settings.max_walk_options]
        if not children:
            return None
        options = [Option(i + 1, c.id, c.path) for i, c in enumerate(children)]
        current_path = None if job.node is None else tax.get(job.node).path
        return walk_question(
            job.product, options, current_id=job.node, current_path=current_path, depth=job.depth
        )

    def _apply(self, job: Job, step: Step) -> None:
        """Move a job on after one answered question."""
        job.steps.append(step)
        parsed = step.parsed
        assert parsed is not None
        q = step.question
        if not parsed.ok:
            where = "" if q.kind == "candidates" else f" (tree walk, {q.kind})"
            status = LLMStatus(parsed.error or "invalid_answer")
            step.status = str(status)
            self._finish(job, status, f"{parsed.detail}{where}")
            return
        job.probs.append(step.raw.answer_p if step.raw else None)
        if job.reason == "" or parsed.reason:
            job.reason = parsed.reason or job.reason
        if q.kind == "candidates":
            if parsed.option is not None:
                step.status = "accepted"
                job.category_id = parsed.option.category_id
                self._finish(job, LLMStatus.ACCEPTED, parsed.reason)
            else:
                step.status = "none_of_these"
                job.stage, job.node, job.depth = "walk", None, 1
            return
        if parsed.option is None:  # walk step: "stop here"
            step.status = "walk_stop"
            if job.node is None:
                self._finish(job, LLMStatus.NONE_OF_THESE_WALKED, "model found no fitting top-level category")
            else:
                job.category_id = job.node
                self._finish(job, LLMStatus.NONE_OF_THESE_WALKED, parsed.reason)
            return
        step.status = "walk_step"
        job.node = parsed.option.category_id
        job.depth += 1
        node = self.taxonomy.get(job.node)
        if node.is_leaf or job.depth > self.settings.walk_max_depth:
            job.category_id = job.node
            self._finish(job, LLMStatus.NONE_OF_THESE_WALKED, parsed.reason)

    @staticmethod
    def _finish(job: Job, status: LLMStatus, reason: str) -> None:
        job.stage = "done"
        job.status = str(status)
        if reason:
            job.reason = reason
