"""The review loop: a trusted reviewer asks for more, and the task opens again on its branch.

After a task's work ended in a pull request, a trusted author's review that requests changes,
or a trusted comment on the pull request or the issue that starts with `executor.review_trigger`
(`@bzzz` by default), asks for another round. The round is named by the newest such request
(`c<comment id>` or `r<review id>`), claimed exactly once like the task itself (its markers
carry `round:<key>`), and worked on the same branch with every request since the last result
as input: the pull request gets one more commit. Untrusted requests are ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from bzzz.tasks.claims import Verifier, parse_marker
from bzzz.tasks.github import Comment, GitHub
from bzzz.tasks.model import Outcome, Task
from bzzz.tasks.trust import MAX_COMMENT_CHARS, Trust, as_data

_PULL_URL = re.compile(r"^Pull request: \S+/pull/(\d+)\s*$", re.M)


@dataclass(frozen=True)
class ReviewRequest:
    key: str  # the round's name: the newest request, "c<comment id>" or "r<review id>"
    text: str  # every request since the last result, as data
    branch: str  # the pull request's branch: the round works on it


async def pending_review(
    github: GitHub, task: Task, trust: Trust, trigger: str, verify: Verifier
) -> ReviewRequest | None:
    """The review round the task's pull request asks for, or None."""
    comments = await github.comments(task.repository, task.number)
    last = _last_result(comments, task, verify)
    if last is None:
        return None
    found = _PULL_URL.search(last.body)
    if found is None:
        return None  # no pull request: nothing to iterate on (an empty change is for humans)
    pull = int(found.group(1))
    requests: list[tuple[datetime, str, str]] = []  # (when, key, text)
    for comment in comments:
        if comment.id > last.id and _asks(comment, trust, trigger):
            requests.append((comment.created_at, f"c{comment.id}", comment.body))
    for comment in await github.comments(task.repository, pull):
        if comment.created_at >= last.created_at and _asks(comment, trust, trigger):
            requests.append((comment.created_at, f"c{comment.id}", comment.body))
    for review in await github.reviews(task.repository, pull):
        if (
            review.submitted_at >= last.created_at
            and review.state == "CHANGES_REQUESTED"
            and trust.of(review.user, review.association)
        ):
            body = review.body or "Changes requested."
            requests.append((review.submitted_at, f"r{review.id}", body))
    if not requests:
        return None
    requests.sort()
    text = "\n\n".join(as_data(body, MAX_COMMENT_CHARS) for _, _, body in requests)
    branch = await github.pull_branch(task.repository, pull)
    return ReviewRequest(requests[-1][1], text, branch)


def _asks(comment: Comment, trust: Trust, trigger: str) -> bool:
    return comment.body.lstrip().startswith(trigger) and trust.comment(comment)


def _last_result(comments: list[Comment], task: Task, verify: Verifier) -> Comment | None:
    """The newest verified successful result of any round."""
    for comment in reversed(comments):
        marker = parse_marker(comment.body)
        if (
            marker is not None
            and marker.kind == "done"
            and marker.outcome == Outcome.SUCCESS
            and marker.verifies(task, verify)
        ):
            return comment
    return None
