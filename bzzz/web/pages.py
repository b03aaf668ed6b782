"""The pages, rendered on the server from the same data the JSON API returns.

Everything shown comes from peers, GitHub users and models, and is hostile: every value goes
through `esc` (which also quotes attributes), links only ever point to http(s) URLs or to our
own paths, and there is no inline script or style (the Content-Security-Policy forbids them).
`Markup` marks HTML built here from escaped parts, so nothing is escaped twice or never.

Each page is a title, its nav entry, the event kinds that change it (`data-live`, read by
app.js) and the inner HTML of `<main>`, which is also the answer to a fragment request.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit

from bzzz.display import ago, clip, duration, short_id

NAV = (
    ("/", "cluster", "Cluster"),
    ("/tasks", "tasks", "Tasks"),
    ("/antennae", "antennae", "Antennae"),
    ("/audit", "audit", "Audit log"),
    ("/github", "github", "GitHub"),
)
STAGES = ("announced", "claimed", "running", "reporting", "done")
ANTENNAE_TYPES = ("plan_proposal", "objection", "collaboration", "consensus", "escalation")
TOOL_OUTPUT = 2000  # characters of a tool's output shown
TEXT = 4000  # characters of a model's message shown
CELL = 120  # characters in a table cell
MESH_NODES = 64


class Markup(str):
    """HTML made here of escaped parts: inserted as it is."""


def esc(value: object) -> Markup:
    if isinstance(value, Markup):
        return value
    return Markup(html.escape("" if value is None else str(value), quote=True))


def join(parts: Iterable[str]) -> Markup:
    return Markup("".join(esc(part) for part in parts))


@dataclass(frozen=True)
class Page:
    title: str
    nav: str  # which NAV entry is current
    live: str  # event kinds that change it, space separated ("kind" or "kind:type")
    main: Markup


# ---- small pieces ---------------------------------------------------------------------------


def at(epoch: float) -> Markup:
    moment = datetime.fromtimestamp(epoch, UTC)
    return Markup(
        f'<time datetime="{esc(moment.isoformat(timespec="seconds"))}">'
        f"{esc(moment.strftime('%H:%M:%S'))}</time>"
    )


def stamp(iso: object) -> Markup:
    """An ISO time from a peer or a file: its time of day, the whole of it on hover."""
    text = str(iso or "")
    return Markup(f'<time title="{esc(text)}">{esc(text[11:19] or text)}</time>')


def link(url: object, text: object) -> Markup:
    """A link to a web page, only if it is one (a `javascript:` URL stays text)."""
    url = str(url or "")
    try:
        scheme = urlsplit(url).scheme
    except ValueError:
        scheme = ""
    if scheme not in ("http", "https"):
        return esc(text)
    return Markup(f'<a href="{esc(url)}" rel="noopener noreferrer nofollow">{esc(text)}</a>')


def task_path(key: str, base: str = "/tasks") -> str:
    repository, _, number = key.rpartition("#")
    return f"{base}/{quote(repository, safe='/')}/{quote(number, safe='')}"


def attrs(values: Mapping[str, object]) -> Markup:
    return Markup("".join(f' {name}="{esc(value)}"' for name, value in values.items()))


def table(
    caption: str,
    headers: Sequence[str],
    rows: Iterable[tuple[Mapping[str, object], Sequence[object]]],
    empty: str,
    id: str = "",
) -> Markup:
    """A table in a wrapper that scrolls sideways on a narrow screen; each row has its data
    attributes (for scripts and tests) and its cells (str escaped, Markup as is)."""
    body = "".join(
        f"<tr{attrs(row_attrs)}>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>"
        for row_attrs, cells in rows
    )
    if not body:
        return Markup(f'<p class="empty">{esc(empty)}</p>')
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in headers)
    ident = f' id="{esc(id)}"' if id else ""
    return Markup(
        f'<div class="scroll" tabindex="0" role="region" aria-label="{esc(caption)}">'
        f"<table{ident}><caption>{esc(caption)}</caption><thead><tr>{head}</tr></thead>"
        f"<tbody>{body}</tbody></table></div>"
    )


def facts(items: Iterable[tuple[str, object]]) -> Markup:
    body = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in items)
    return Markup(f'<dl class="facts">{body}</dl>')


def agents(status: Mapping[str, Any]) -> dict[str, str]:
    """Peer id -> agent id, as the cluster table knows them."""
    return {row["peer_id"]: row["agent_id"] for row in status.get("cluster", []) if row["agent_id"]}


def who(peer_id: str, names: Mapping[str, str]) -> Markup:
    if not peer_id:
        return Markup("-")
    name = names.get(peer_id) or short_id(peer_id)
    return Markup(f'<span class="who" title="{esc(peer_id)}">{esc(clip(name, 40))}</span>')


def pretty(data: object, width: int = 300) -> str:
    return clip(json.dumps(data, ensure_ascii=False, sort_keys=True, default=str), width)


# ---- the layout -------------------------------------------------------------------------------


def layout(page: Page, *, agent: str, assets: Mapping[str, str]) -> str:
    """The whole document: skip link, nav, the live indicator, and `<main id="live">`."""
    nav = "".join(
        f'<li><a href="{path}"{" aria-current=page" if key == page.nav else ""}>{esc(label)}</a>'
        "</li>"
        for path, key, label in NAV
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(page.title)} · bzzz {esc(agent)}</title>"
        f'<link rel="stylesheet" href="/static/style.css?v={esc(assets.get("style.css", ""))}">'
        f'<script src="/static/app.js?v={esc(assets.get("app.js", ""))}" defer></script>'
        "</head><body>"
        '<a class="skip" href="#live">Skip to content</a>'
        '<header class="top"><span class="brand">bzzz</span>'
        f'<span class="agent">{esc(agent)}</span>'
        f'<nav aria-label="Sections"><ul>{nav}</ul></nav>'
        '<span id="conn" class="conn" role="status" aria-live="polite" data-state="static">'
        "static page</span></header>"
        f'<main id="live" tabindex="-1" data-live="{esc(page.live)}">{page.main}</main>'
        "</body></html>\n"
    )


def problem(title: str, text: str, nav: str = "") -> Page:
    return Page(title, nav, "", Markup(f"<h1>{esc(title)}</h1><p>{esc(text)}</p>"))


# ---- the cluster --------------------------------------------------------------------------------


def cluster(status: Mapping[str, Any]) -> Page:
    """`bzzz status` as a page: the cluster table, this node's peers, the mesh."""
    rows = []
    for node in status["cluster"]:
        state = node["state"] if node["works"] else f"{node['state']}, idle*"
        peers = node["connected_peers"]
        rows.append(
            (
                {"data-peer": node["peer_id"], "data-state": node["state"]},
                [
                    clip(node["agent_id"] or "-", 40) + (" (this node)" if node["here"] else ""),
                    Markup(
                        f'<span title="{esc(node["peer_id"])}">{esc(short_id(node["peer_id"]))}'
                        "</span>"
                    ),
                    state,
                    "?" if peers is None else str(peers),
                    "{}/{}".format(*node["tasks"]),
                    clip(",".join(node["models"]) or "-", 40),
                    clip(node["version"] or "?", 20),
                    "-" if node["here"] else ago(node["heard_s"]),
                ],
            )
        )
    names = agents(status)
    peer_rows = [
        (
            {"data-peer": p["peer_id"], "data-state": p["state"]},
            [
                Markup(f'<span title="{esc(p["peer_id"])}">{esc(short_id(p["peer_id"]))}</span>'),
                clip(p["agent_id"] or "-", 40),
                clip(",".join(p["capabilities"]) or "-", 40),
                p["status"] if p.get("works", True) else f"{p['status']}, idle*",
                p["state"],
                "?" if p["connected_peers"] is None else str(p["connected_peers"]),
                ago(p["last_seen_s"]),
                str(p["received"]),
                str(p["missed"]),
            ],
        )
        for p in status["peers"]
    ]
    head = facts(
        [
            ("node", f"{status['agent_id']} ({status['peer_id']})"),
            ("version", status["version"]),
            ("network", status["network_id"]),
            ("up", duration(status["uptime_s"])),
            ("dial at", " ".join(status["listen"]) or "-"),
        ]
    )
    idle = any(not node["works"] for node in status["cluster"])
    main = Markup(
        f"<h1>Cluster</h1>{head}"
        + table(
            "Nodes of the cluster",
            ("Node", "Peer", "State", "Peers", "Tasks", "Models", "Version", "Heard"),
            rows,
            "no nodes",
            id="cluster",
        )
        + ('<p class="note">* cannot work now: its own status says why</p>' if idle else "")
        + "<h2>Mesh</h2>"
        + mesh(status, names)
        + "<h2>Peers of this node</h2>"
        + table(
            "Peers of this node",
            ("Peer", "Agent", "Capabilities", "Status", "State", "Peers", "Seen", "Recv", "Miss"),
            peer_rows,
            "no peers yet",
            id="peers",
        )
    )
    return Page(
        "Cluster",
        "cluster",
        "peer message:capability_broadcast message:availability_broadcast",
        main,
    )


def mesh(status: Mapping[str, Any], names: Mapping[str, str]) -> Markup:
    """The nodes on a circle; lines for this node's own connections (the links it knows);
    each other node labelled with how many peers it says it has."""
    own = status["peer_id"]
    counts = {row["peer_id"]: row["connected_peers"] for row in status["cluster"]}
    ids = [own] + [row["peer_id"] for row in status["cluster"] if row["peer_id"] != own]
    ids += [peer for peer in status["connected"] if peer not in ids]
    ids = ids[:MESH_NODES]
    size, centre, radius = 360, 180, 130
    where = {}
    for index, peer in enumerate(ids):
        angle = 2 * math.pi * index / len(ids) - math.pi / 2
        where[peer] = (
            round(centre + (radius if len(ids) > 1 else 0) * math.cos(angle), 1),
            round(centre + (radius if len(ids) > 1 else 0) * math.sin(angle), 1),
        )
    links = [peer for peer in status["connected"] if peer in where and peer != own]
    edges = "".join(
        f'<line class="edge" x1="{where[own][0]}" y1="{where[own][1]}" x2="{where[p][0]}" '
        f'y2="{where[p][1]}" data-from="{esc(own)}" data-to="{esc(p)}"></line>'
        for p in links
    )
    nodes = []
    for peer in ids:
        x, y = where[peer]
        count = counts.get(peer)
        label = "this node" if peer == own else ("? peers" if count is None else f"{count} peers")
        kind = "here" if peer == own else "linked" if peer in links else "apart"
        below = y >= centre
        nodes.append(
            f'<g class="node {kind}" data-peer="{esc(peer)}"><circle cx="{x}" cy="{y}" r="9">'
            f"<title>{esc(peer)}</title></circle>"
            f'<text x="{x}" y="{y + (22 if below else -24)}" text-anchor="middle">'
            f"{esc(clip(names.get(peer) or short_id(peer), 18))}</text>"
            f'<text class="count" x="{x}" y="{y + (34 if below else -12)}" '
            f'text-anchor="middle">{esc(label)}</text></g>'
        )
    return Markup(
        f'<figure class="mesh"><svg viewBox="-20 -10 {size + 40} {size + 20}" role="img" '
        f'aria-labelledby="mesh-title" id="mesh"><title id="mesh-title">The mesh: {len(ids)} '
        f"nodes, {len(links)} connections of this node</title>{edges}{''.join(nodes)}</svg>"
        "<figcaption>Lines: this node's own connections. Labels: the peers each node says it "
        "has.</figcaption></figure>"
    )


# ---- tasks --------------------------------------------------------------------------------------


def stage_of(row: Mapping[str, Any]) -> str:
    timeline = row.get("timeline") or []
    return str(timeline[-1]["stage"]) if timeline else str(row["phase"])


def links_of(row: Mapping[str, Any]) -> Markup:
    parts = [link(row.get("url"), "issue")] if row.get("url") else []
    result = row.get("result_url") or ""
    if result and result != row.get("url"):
        parts.append(link(result, "pull request"))
    return Markup(" ".join(parts)) if parts else Markup("-")


def tasks(rows: Sequence[Mapping[str, Any]]) -> Page:
    body = [
        (
            {"data-task": row["task"], "data-phase": row["phase"], "data-stage": stage_of(row)},
            [
                Markup(f'<a href="{esc(task_path(row["task"]))}">{esc(row["task"])}</a>'),
                clip(row["title"], CELL),
                Markup(
                    f'<span class="phase" data-stage="{esc(stage_of(row))}">'
                    f"{esc(row['phase'])}</span>"
                ),
                clip(row["holder_agent"] or short_id(row["holder"]) or "-", 40)
                + (" (here)" if row["held_here"] else ""),
                ago(row["heard_s"]),
                links_of(row),
            ],
        )
        for row in rows
    ]
    main = Markup(
        "<h1>Tasks</h1>"
        + table(
            "Tasks this node knows",
            ("Task", "Title", "Phase", "Holder", "Heard", "Links"),
            body,
            "no tasks known",
            id="tasks",
        )
    )
    return Page("Tasks", "tasks", "task", main)


def task(
    key: str,
    row: Mapping[str, Any] | None,
    transcript: Mapping[str, Any] | None,
    conversation: bool,
) -> Page:
    """One task: where it got (the five stages), its phase timeline, holder, links, and the
    transcript of the agent that ran it here."""
    if row is None:
        return problem(f"Task {key}", "This node knows no such task.", "tasks")
    stage = stage_of(row)
    reached = {entry["stage"] for entry in row.get("timeline", [])}
    strip = "".join(
        f'<li data-stage="{s}" class="{_reached(s, stage, reached)}">{s}</li>' for s in STAGES
    )
    timeline = "".join(
        f'<li data-phase="{esc(entry["phase"])}" data-stage="{esc(entry["stage"])}">'
        f"{at(entry['at'])} <strong>{esc(entry['phase'])}</strong>"
        + (f" · {esc(short_id(entry['holder']))}" if entry["holder"] else "")
        + "</li>"
        for entry in row.get("timeline", [])
    )
    talk = (
        f'<p><a href="{esc(task_path(key, "/antennae"))}">The Antennae conversation about it'
        "</a></p>"
        if conversation
        else ""
    )
    holder = (row["holder_agent"] or "-") + (f" ({row['holder']})" if row["holder"] else "")
    main = Markup(
        f'<h1 data-task="{esc(key)}" data-phase="{esc(row["phase"])}" data-stage="{esc(stage)}">'
        f"{esc(key)}: {esc(clip(row['title'], 200))}</h1>"
        f'<ol class="stages" aria-label="Stages">{strip}</ol>'
        + facts(
            [
                ("phase", row["phase"]),
                ("holder", holder),
                ("heard", ago(row["heard_s"])),
            ]
        )
        + Markup(f'<p class="links">{links_of(row)}</p>')
        + talk
        + f'<h2>Timeline</h2><ol class="timeline" id="timeline">{timeline}</ol>'
        + "<h2>Transcript</h2>"
        + transcript_html(transcript)
    )
    return Page(f"Task {key}", "tasks", "task audit", main)


def _reached(stage: str, current: str, reached: set[str]) -> str:
    return "current" if stage == current else "reached" if stage in reached else ""


def transcript_html(transcript: Mapping[str, Any] | None) -> Markup:
    if transcript is None:
        return Markup(
            '<p class="empty">No transcript here: an agent on this node did not run this task.</p>'
        )
    items = []
    for entry in transcript["entries"]:
        kind = str(entry.get("kind", ""))
        when = stamp(entry.get("at"))
        if kind == "assistant":
            calls = "".join(
                f"<li><code>{esc(c.get('name'))}</code>(<code>{esc(clip(c.get('arguments'), 300))}"
                "</code>)</li>"
                for c in entry.get("tool_calls") or []
                if isinstance(c, dict)
            )
            body = (
                f"{when} <strong>model</strong>, turn {esc(entry.get('turn'))}"
                + (
                    f"<pre>{esc(clip(entry['content'], TEXT))}</pre>"
                    if entry.get("content")
                    else ""
                )
                + (f'<ul class="calls">{calls}</ul>' if calls else "")
            )
        elif kind == "tool":
            body = (
                f"{when} <strong>tool</strong> <code>{esc(entry.get('name'))}</code>"
                f"<pre>{esc(clip(entry.get('output'), TOOL_OUTPUT))}</pre>"
            )
        elif kind == "tests":
            passed = entry.get("exit") == 0
            body = (
                f"{when} <strong>tests</strong> <code>{esc(entry.get('command'))}</code>: "
                f'<span class="{"ok" if passed else "bad"}">exit {esc(entry.get("exit"))}</span>'
                f"<pre>{esc(clip(entry.get('output'), TOOL_OUTPUT))}</pre>"
            )
        elif kind in ("system", "user"):
            body = (
                f"{when} <details><summary><strong>{esc(kind)}</strong> prompt</summary>"
                f"<pre>{esc(clip(entry.get('content'), TEXT))}</pre></details>"
            )
        else:
            said = entry.get("reason") or pretty(entry, TEXT)
            body = f"{when} <strong>{esc(kind)}</strong> {esc(clip(said, TEXT))}"
        items.append(f'<li data-kind="{esc(kind)}">{body}</li>')
    note = (
        f'<p class="note">{esc(transcript["file"])}'
        + (", the newest part only" if transcript["truncated"] else "")
        + "</p>"
    )
    return Markup(f'{note}<ol class="transcript" id="transcript">{"".join(items)}</ol>')


# ---- Antennae -----------------------------------------------------------------------------------


def antennae(rows: Sequence[Mapping[str, Any]], names: Mapping[str, str]) -> Page:
    body = [
        (
            {"data-conversation": row["task"], "data-state": row["state"]},
            [
                Markup(
                    f'<a href="{esc(task_path(row["task"], "/antennae"))}">{esc(row["task"])}</a>'
                ),
                row["state"] + (" (task done)" if row.get("done") else ""),
                who(row["proposer"], names),
                str(row["rounds"]),
                str(len(row["open_objections"])),
                str(row["messages"]),
                clip(row["plan"], 80) or "-",
            ],
        )
        for row in rows
    ]
    main = Markup(
        "<h1>Antennae</h1>"
        + table(
            "Conversations",
            ("Task", "State", "Proposer", "Rounds", "Open objections", "Messages", "Plan"),
            body,
            "no conversations",
            id="conversations",
        )
    )
    live = " ".join(f"message:{t}" for t in ANTENNAE_TYPES) + " audit"
    return Page("Antennae", "antennae", live, main)


def conversation(
    key: str, row: Mapping[str, Any] | None, names: Mapping[str, str], hops: Mapping[str, int]
) -> Page:
    """A conversation as a thread: who said what, in reply to what, with hop counts."""
    live = " ".join(f"message:{t}" for t in ANTENNAE_TYPES) + " audit"
    if row is None:
        return Page(
            f"Conversation {key}",
            "antennae",
            live,
            Markup(f"<h1>{esc(key)}</h1><p>No conversation about this task here (yet).</p>"),
        )
    items = []
    for entry in row.get("history", []):
        hop = hops.get(entry["id"])
        reply = (
            f' · answers <a href="#m-{esc(entry["in_reply_to"])}">'
            f"{esc(entry['in_reply_to'][:8])}</a>"
            if entry.get("in_reply_to")
            else ""
        )
        items.append(
            f'<li id="m-{esc(entry["id"])}" data-kind="{esc(entry["change"])}" '
            f'data-type="{esc(entry["type"])}" data-from="{esc(entry["from"])}">'
            f'<p class="head">{stamp(entry["at"])} {who(entry["from"], names)} · '
            f"<strong>{esc(entry['change'].replace('_', ' '))}</strong>"
            + (f" · {hop} hop{'' if hop == 1 else 's'}" if hop is not None else "")
            + reply
            + f'</p><p class="text">{esc(entry["text"])}</p></li>'
        )
    objections = "".join(
        f"<li>{who(o['by'], names)}: {esc(o['reason'])}</li>" for o in row["open_objections"]
    )
    helpers = ", ".join(f"{who(p, names)} ({esc(w)})" for p, w in row["helpers"].items())
    accepted = ", ".join(names.get(p) or short_id(p) for p in row["accepted_by"])
    main = Markup(
        f'<h1 data-conversation="{esc(key)}" data-state="{esc(row["state"])}">{esc(key)}</h1>'
        + facts(
            [
                ("state", row["state"] + (" (task done)" if row.get("done") else "")),
                ("proposer", names.get(row["proposer"]) or row["proposer"] or "-"),
                ("round", row["rounds"]),
                ("decision", row["decision"] or "-"),
                ("accepted by", accepted or "-"),
            ]
        )
        + (f"<h2>Plan</h2><pre>{esc(row['plan'])}</pre>" if row["plan"] else "")
        + (f'<h2>Open objections</h2><ul id="objections">{objections}</ul>' if objections else "")
        + (f"<p>Helpers: {helpers}</p>" if helpers else "")
        + f'<p><a href="{esc(task_path(key))}">The task</a></p>'
        + f'<h2>Thread</h2><ol class="thread" id="thread">{"".join(items)}</ol>'
    )
    return Page(f"Conversation {key}", "antennae", live, main)


# ---- the audit log ------------------------------------------------------------------------------


def audit(
    rows: Sequence[Mapping[str, Any]],
    verify: Mapping[str, Any],
    query: Mapping[str, str],
    names: Mapping[str, str],
) -> Page:
    """The newest entries across authors (or of one), a filter form, the verify result."""
    options = "".join(
        f'<option value="{esc(author)}">{esc(names.get(author, ""))}</option>'
        for author in verify.get("heads", {})
    )
    form = (
        '<form class="filter" method="get" action="/audit" role="search">'
        '<label for="f-author">Author</label>'
        f'<input id="f-author" name="author" list="authors" value="{esc(query.get("author", ""))}" '
        'autocomplete="off" placeholder="peer id">'
        f'<datalist id="authors">{options}</datalist>'
        '<label for="f-type">Type</label>'
        f'<input id="f-type" name="type" value="{esc(query.get("type", ""))}" autocomplete="off" '
        'placeholder="e.g. task_phase">'
        '<button type="submit">Filter</button> <a href="/audit">all</a></form>'
    )
    body = [
        (
            {"data-author": r["author"], "data-seq": r["seq"], "data-type": r["type"]},
            [
                stamp(r["timestamp"]),
                who(r["author"], names),
                str(r["seq"]),
                r["type"],
                Markup(f"<code>{esc(pretty(r['data']))}</code>"),
            ],
        )
        for r in rows
    ]
    main = Markup(
        "<h1>Audit log</h1>"
        + form
        + table(
            f"The newest {len(rows)} entries",
            ("Time", "Author", "Seq", "Type", "Data"),
            body,
            "no entries",
            id="audit",
        )
        + "<h2>Verification</h2>"
        + verification(verify, names)
    )
    return Page("Audit log", "audit", "audit", main)


def verification(verify: Mapping[str, Any], names: Mapping[str, str]) -> Markup:
    ok = verify.get("ok")
    verdict = (
        f'<p class="verdict {"ok" if ok else "bad"}" id="verify" data-ok="{str(bool(ok)).lower()}">'
        + ("Every chain verifies" if ok else f"{verify.get('problems_total', 0)} problems found")
        + f" (checked {stamp(verify.get('checked_at'))}, {esc(verify.get('took_s'))} s)</p>"
    )
    heads = table(
        "Chains",
        ("Author", "Entries"),
        (({"data-author": a}, [who(a, names), str(h)]) for a, h in verify.get("heads", {}).items()),
        "no logs",
    )
    problems = table(
        "Problems",
        ("Author", "Seq", "Reason"),
        (
            ({"data-author": p["author"]}, [who(p["author"], names), str(p["seq"]), p["reason"]])
            for p in verify.get("problems", [])
        ),
        "no problems",
    )
    forks = "".join(fork(f, names) for f in verify.get("forks", []))
    return Markup(
        verdict + heads + problems + "<h3>Forks</h3>" + (forks or '<p class="empty">no forks</p>')
    )


def fork(record: Mapping[str, Any], names: Mapping[str, str]) -> str:
    """Both entries an author signed for the same place in its chain: the evidence."""

    def side(label: str, given: object) -> str:
        signed: dict[str, Any] = given if isinstance(given, dict) else {}
        entry: dict[str, Any] = signed["entry"] if isinstance(signed.get("entry"), dict) else {}
        return (
            f"<dt>{esc(label)}</dt><dd><code>{esc(signed.get('hash'))}</code> "
            f"{stamp(entry.get('timestamp'))} {esc(entry.get('type'))} "
            f"<code>{esc(pretty(entry.get('data'), 400))}</code></dd>"
        )

    author = str(record.get("author", ""))
    return (
        f'<section class="fork" data-author="{esc(author)}" data-seq="{esc(record.get("seq"))}">'
        f"<p>{who(author, names)} signed two entries as seq {esc(record.get('seq'))} "
        f"(shown by {esc(short_id(str(record.get('peer', ''))))}, "
        f"found {stamp(record.get('detected_at'))})</p>"
        f'<dl class="facts">{side("ours", record.get("ours"))}'
        f"{side('theirs', record.get('theirs'))}</dl></section>"
    )


# ---- GitHub -------------------------------------------------------------------------------------


def github(status: Mapping[str, Any]) -> Page:
    tasks_ = status["tasks"]
    state = tasks_.get("github")
    names = agents(status)
    if state is None:
        main = Markup(
            "<h1>GitHub</h1><p>Not configured here (P2P only: no token or no repositories).</p>"
        )
        return Page("GitHub", "github", "audit", main)
    poller = tasks_.get("poller_id")
    used = (
        f"{state['limit'] - state['remaining']} of {state['limit']} used, {state['remaining']} left"
        if state.get("remaining") is not None and state.get("limit") is not None
        else "not known yet"
    )
    reset = (
        datetime.fromtimestamp(state["reset"], UTC).strftime("%H:%M:%S UTC")
        if isinstance(state.get("reset"), int | float)
        else "-"
    )
    hours = max(status["uptime_s"], 1) / 3600
    main = Markup(
        '<h1>GitHub</h1><div id="github">'
        + facts(
            [
                (
                    "poller",
                    "this node"
                    if tasks_.get("poller")
                    else (names.get(poller or "") or poller or "nobody"),
                ),
                ("login", state.get("login") or "-"),
                ("login error", state.get("login_error") or "-"),
                ("this hour's budget", used),
                ("budget resets", reset),
                ("requests since start", state["requests"]),
                ("requests per hour (mean since start)", round(state["requests"] / hours)),
                ("answered 304 (free)", state.get("not_modified", 0)),
                ("rate limited", state.get("rate_limited", 0)),
                ("retried", state.get("retried", 0)),
                ("paused now", f"{state['paused_s']} s" if state.get("paused_s") else "no"),
                ("clock offset", f"{state.get('clock_offset_s', 0)} s"),
                ("forged claim markers", state.get("forged_markers", 0)),
                ("untrusted issues skipped", state.get("untrusted_skipped", 0)),
            ]
        )
        + "</div>"
    )
    # The poller's availability broadcast follows each of its polls.
    return Page("GitHub", "github", "audit task message:availability_broadcast", main)
