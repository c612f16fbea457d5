"""What `ingest bench` shows: the cases as a table, the baselines as ratios
against ingest's own figures, the goals as met or not; and with --out, the
same as DIR/results.json with PNG plots beside it."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

from ingest.bench import goals
from ingest.bench.goals import baseline, clickhouse_pairs

ENGINE_NAMES = {"clickhouse-mergetree": "ClickHouse MergeTree", "clickhouse-buffer": "ClickHouse Buffer"}
BULK_CLAIM = (10, 50)  # "bulk inserts are 10-50x faster than individual inserts"
PLOTS = ("throughput.png", "latency.png")
LEGEND_WIDTH = 110


# figures derived from a run


def comparisons(document: dict) -> list[dict]:
    """Each baseline beside the ingest figure it stands for; ratio > 1: ingest's side is faster."""
    rows = []
    shapes = document["settings"]["shapes"]
    cases = [c for c in document["cases"] if not c.get("error") and c.get("events_per_second")]

    def best_case(matches, shape):
        found = [c for c in cases if c["shape"] == shape and matches(c)]
        if not found:
            return None
        best = max(found, key=lambda c: c["events_per_second"])
        return f"ingest {best['case']} → {best['sink']}", best["events_per_second"]

    def add(kind, base, against, note=""):
        if base is None or against is None:
            return
        name, value = against
        rows.append({
            "kind": kind, "baseline": base["name"], "shape": base["shape"], "baseline_events_per_second": base["events_per_second"],
            "compared_with": name, "compared_events_per_second": value,
            "ratio": round(value / base["events_per_second"], 2), "note": note,
        })

    def as_against(figure):
        return None if figure is None else (figure["name"], figure["events_per_second"])

    for shape in shapes:
        tcp_parquet = best_case(lambda c: c["transport"] == "tcp" and c["sink"] == "parquet", shape)
        add("pyarrow-to-parquet", baseline(document, "pyarrow", shape),
            tcp_parquet or best_case(lambda c: c["transport"] == "tcp", shape),
            "" if tcp_parquet else "no TCP → Parquet case in this run: best TCP case instead")
        into_duckdb = best_case(lambda c: c["sink"] == "duckdb", shape)
        add("duckdb-read-ndjson", baseline(document, "duckdb-read-ndjson", shape), into_duckdb)
        row_insert = baseline(document, "duckdb-row-insert", shape)
        add("bulk-vs-row-insert", row_insert, as_against(baseline(document, "duckdb-bulk-insert", shape)),
            "bulk: one transaction, INSERT from Arrow")
        add("ingest-vs-row-insert", row_insert, into_duckdb, "ingest end to end: sockets, encoding, commit")
        compiled = as_against(baseline(document, "encoder-compiled", shape))
        add("encoder-vs-pyarrow", baseline(document, "pyarrow-read-json-1t", shape), compiled,
            "both one thread, parse/encode only")
        add("encoder-vs-reference", baseline(document, "encoder-reference", shape), compiled, "encode only")
        add("import-vs-read-ndjson", baseline(document, "import-read-ndjson", shape),
            as_against(baseline(document, "import-duckdb", shape)), "whole commands on the same file")
        add("import-vs-pyarrow", baseline(document, "import-pyarrow", shape),
            as_against(baseline(document, "import-parquet", shape)), "whole commands on the same file")
    for ours, theirs in clickhouse_pairs(document):
        note = "" if ours["shape"] == theirs["shape"] else f"ingest on the {ours['shape']} corpus, ClickHouse on its {theirs['shape']} twin"
        add(theirs["sink"], {"name": f"{ENGINE_NAMES[theirs['sink']]} {theirs['case']}", "shape": theirs["shape"],
                             "events_per_second": theirs["events_per_second"]},
            (f"ingest {ours['case']} → {ours['sink']}", ours["events_per_second"]), note)
    mentioned = {(row[key], row["shape"]) for row in rows for key in ("baseline", "compared_with")}
    for figure in document["baselines"]:  # with nothing of ingest's to compare it with in this run
        if (figure["name"], figure["shape"]) not in mentioned:
            rows.append({"kind": figure["key"], "baseline": figure["name"], "shape": figure["shape"],
                         "baseline_events_per_second": figure["events_per_second"], "compared_with": None,
                         "compared_events_per_second": None, "ratio": None, "note": "no ingest case to compare with"})
    return rows


def bulk_claim(document: dict) -> str | None:
    for row in document["comparisons"]:
        if row["kind"] == "bulk-vs-row-insert":
            low, high = BULK_CLAIM
            ratio = row["ratio"]
            verdict = ("reproduced" if low <= ratio <= high
                       else "not reproduced: the claim " + ("understates" if ratio > high else "overstates") + " it")
            return (f'Claim "bulk inserts are {low}-{high}x faster than individual inserts": bulk is {ratio:,.0f}× '
                    f"faster here ({verdict}). Bulk = the DuckDB sink's write of one Arrow batch of the corpus in one "
                    f"transaction; individual = one autocommit INSERT per event, on the corpus's first "
                    f"{baseline(document, 'duckdb-row-insert', row['shape'])['events']:,} events, extrapolated.")
    return None


def complete(document: dict) -> dict:
    """Adds the derived sections (comparisons, goals) to a run's document."""
    document["comparisons"] = comparisons(document)
    document["goals"] = goals.evaluate(document)
    return document


# the terminal report


def render(document: dict) -> str:
    out = []
    shapes = document["settings"]["shapes"]
    server = document.get("server") or {}
    target = document["settings"].get("target")
    title = f"ingest bench — {document['settings']['events']:,}-event {' and '.join(shapes)} corpus, seed {document['settings']['seed']}"
    out += [title, "=" * len(title), ""]
    if document["cases"]:
        out.append(_table(*_case_rows(document, show_shape=len(shapes) > 1)))
        out.append("")
        out += _legend(document, target, server)
        out.append("")
    if document["comparisons"]:
        out.append("Baselines (same corpus, same run; ratio > 1: the compared side is faster)")
        out.append("")
        out.append(_table(
            ["baseline", "events/s", "compared with", "events/s", "ratio"] + (["shape"] if len(shapes) > 1 else []),
            [[row["baseline"], _count(row["baseline_events_per_second"]), row["compared_with"] or "—",
              _count(row["compared_events_per_second"]), _ratio(row["ratio"])]
             + ([row["shape"]] if len(shapes) > 1 else []) for row in document["comparisons"]],
            "lrlrr" + "l" * (len(shapes) > 1),
        ))
        claim = bulk_claim(document)
        if claim:
            out += [""] + textwrap.wrap(claim, LEGEND_WIDTH)
        out.append("")
    out.append("Goals (best matching case of this run)")
    out.append("")
    out.append(_table(
        ["goal", "measured", "in", "met"],
        [[g["goal"], _goal_value(g), g["source"] or "not measured in this run",
          "—" if g["met"] is None else "yes" if g["met"] else "NO"]
         for g in document["goals"]],
        "lrll",
    ))
    errors = [(f"{c['case']} → {c['sink']} ({c['shape']})", c["error"]) for c in document["cases"] if c.get("error")]
    errors += [(f"baseline {b['name']} ({b['shape']})", b["error"]) for b in document["baselines"] if b.get("error")]
    skipped = [c for c in document["cases"] if c.get("skipped")]
    if errors or skipped or document["notes"]:
        out.append("")
        out += [line for note in document["notes"]
                for line in textwrap.wrap(f"note: {note}", LEGEND_WIDTH, subsequent_indent="  ")]
        out += [f"skipped: {c['case']} ({c['shape']}): {c['skipped']}" for c in skipped]
        out += [f"error: {what}: {error}" for what, error in errors]
    return "\n".join(out) + "\n"


def _goal_value(goal: dict) -> str:
    value, unit = goal["measured"], goal["unit"]
    if value is None:
        return "—"
    return f"{value:.2f}×" if unit == "×" else f"{value:.2f} ms" if unit == "ms" else f"{_count(value)} {unit}"


def ordered_cases(document: dict) -> list[dict]:
    """The real-client cases first (ingest's, then ClickHouse's), then the capacity cases, each in run order."""
    return sorted(document["cases"], key=lambda c: not c.get("one_in_flight"))


def _case_rows(document: dict, show_shape: bool):
    headers = ["case", "sink"] + (["shape"] if show_shape else []) + [
        "events", "clients", "conns×in flight", "events/s", "MB/s", "req/s", "ack ms p50/p99", "landed ms p50/p99",
        "CPU s", "peak RSS MB"]
    rows = []
    for c in ordered_cases(document):
        head = [c["case"], c["sink"]] + ([c["shape"]] if show_shape else [])
        if c.get("events_per_second") is None:
            rows.append(head + [_count(c["events"]), "", "", "skipped" if c.get("skipped") else "failed"] + [""] * 6)
            continue
        latency = c["latency_ms"]
        connections = f"{c.get('connections') or c['clients']}×{c['pipeline']}" if c["pipeline"] else "—"
        rows.append(head + [
            _count(c["events"]), str(c["clients"]), connections, _count(c["events_per_second"]), f"{c['mb_per_second']:.1f}",
            _count(c["requests_per_second"]), _pair(latency["ack"]), _pair(latency["landed"]),
            "—" if c["server_cpu_seconds"] is None else f"{c['server_cpu_seconds']:.2f}",
            "—" if c["server_peak_rss_bytes"] is None else f"{c['server_peak_rss_bytes'] / 1e6:,.0f}",
        ])
    return headers, rows, "ll" + "l" * show_shape + "rrrrrrrrrr"


def _legend(document: dict, target: str | None, server: dict) -> list[str]:
    flags = " ".join(document["settings"]["server_flags"] or [])
    where = (f"the running server at {target} (sink {server.get('sink')})" if target
             else f"a fresh `ingest serve {flags}` per case, on loopback, other settings at their defaults")
    wait = document["settings"].get("http_wait")
    entries = [
        f"Server: {where}; hot path {(server.get('hot_path') or {}).get('encoder', '?')}.",
        "events/s, MB/s: the case's events (and their NDJSON bytes) over the time from the first byte sent until "
        "GET /v1/stats shows all of them landed, i.e. committed to the sink (polled every 10 ms).",
        "Cases: http-B-cN is what real clients do: N keep-alive connections, one request in flight on each (no "
        "pipelining), B events per request; -none asks ?wait=none. The others are capacity figures: TCP, and HTTP "
        "pipelined (few connections, many requests in flight).",
        "req/s: TCP send() calls or HTTP requests per second over that time. clients: client processes; "
        "conns×in flight: their HTTP connections in all × requests in flight on each.",
        "ack ms: HTTP round trip, from a request's first byte to its whole response (with pipelining it includes "
        "waiting behind the requests ahead of it). Ack mode: "
        + (f"?wait={wait}." if wait else "the server's default (received: buffered and in the synced write-ahead log).")
        + " TCP has no acknowledgement: —.",
        "landed ms: from an event's send() until /v1/stats counts it landed, reading the sent and landed curves "
        "against each other (batches taken as landing in order; ±10 ms). A batch that does not fill is sealed "
        f"by the flush interval ({_flag(flags, '--flush-interval', '?')} ms here).",
        "CPU s: server utime+stime, all threads, over the case. peak RSS: server VmHWM, reset at the case start "
        "(ClickHouse's rows: clickhouse-server's, one server for all its cases).",
    ]
    clickhouse = document.get("clickhouse")
    if clickhouse:
        entries.append(
            f"ClickHouse {clickhouse['version']} ({clickhouse['where']}), same clients, INSERT INTO t FORMAT "
            f"JSONEachRow over HTTP, on the {clickhouse['shape']} corpus (18.16 reads no JSON object into a String "
            "column). clickhouse-mergetree: answered once the part is written, so its events/s run until the last "
            "answer and landed = acknowledged; one event per INSERT writes a part each, so those cases send at most "
            f"{clickhouse['row_insert_events']:,} events. clickhouse-buffer: answered once in memory; its events/s "
            f"run until SELECT count() of the {clickhouse['buffer']} table (rows in memory included) counts them all "
            "(polled every 10 ms); they reach its MergeTree table at its next flush (250,000 rows or 1 s), untimed.")
    entries += [
        f"Each case ran {document['settings']['repeats']}×; shown: its run with the median events/s. "
        f"Load average before/after: {_load(document['machine'])}.",
    ]
    return [line for entry in entries
            for line in textwrap.wrap(entry, LEGEND_WIDTH, subsequent_indent="  ", break_on_hyphens=False)]


def _load(machine: dict) -> str:
    before, after = machine.get("load_average_before"), machine.get("load_average_after")
    return " / ".join("?" if load is None else f"{load[0]:.2f}" for load in (before, after))


def _flag(flags: str, name: str, default: str) -> str:
    parts = flags.split()
    return parts[parts.index(name) + 1] if name in parts else default


def _ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}×" if value < 10 else f"{value:,.0f}×"


def _count(value) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _pair(percentiles: dict | None) -> str:
    if not percentiles:
        return "—"
    return f"{_ms(percentiles['p50'])} / {_ms(percentiles['p99'])}"


def _ms(value: float) -> str:
    return f"{value:.2f}" if value < 10 else f"{value:.0f}"


def _table(headers: list[str], rows: list[list[str]], align: str) -> str:
    widths = [max(len(str(row[i])) for row in [headers] + rows) for i in range(len(headers))]

    def line(cells):
        return "  ".join(str(c).rjust(w) if a == "r" else str(c).ljust(w) for c, w, a in zip(cells, widths, align)).rstrip()

    return "\n".join([line(headers), "  ".join("-" * w for w in widths)] + [line(row) for row in rows])


# files


def write(document: dict, out: Path) -> list[Path]:
    """DIR/results.json and the plots; returns the paths written."""
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.json"
    results.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return [results] + plot(document, out)


def _series(document: dict, one_in_flight: bool):
    """(label, style, [case, ...] in batch order) for each line of a plot: the
    real-client cases (ingest's by sink and ack, ClickHouse's by engine; one
    connection apart) or the capacity cases (by transport and sink)."""
    groups: dict[str, list] = {}
    show_shape = len(document["settings"]["shapes"]) > 1
    for c in document["cases"]:
        if c.get("events_per_second") is None or bool(c.get("one_in_flight")) != one_in_flight:
            continue
        who = ENGINE_NAMES.get(c["sink"]) or f"ingest → {c['sink']}"
        if not one_in_flight:
            who = f"{c['transport'].upper()}{' pipelined' if c['transport'] == 'http' else ''} → {c['sink']}"
        label = (who + (", 1 connection" if c.get("connections") == 1 else "")
                 + (f", ?wait={c['wait']}" if c.get("wait") else "") + (f" ({c['shape']})" if show_shape else ""))
        groups.setdefault(label, []).append(c)
    for label, cases in groups.items():
        first = cases[0]
        style = {
            "marker": "D" if first.get("connections") == 1 else "s" if first.get("server") == "clickhouse" else "o",
            "linestyle": "--" if first.get("server") == "clickhouse" or first["transport"] == "tcp" else "-",
            "fillstyle": "none" if first.get("wait") == "none" else "full",
        }
        yield label, style, sorted(cases, key=lambda c: c["batch"])


def plot(document: dict, out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(one_in_flight, list(_series(document, one_in_flight))) for one_in_flight in (True, False)]
    panels = [(one_in_flight, series) for one_in_flight, series in panels if series]
    if not panels:
        return []
    titles = {True: "real clients: N connections, one request in flight each",
              False: "capacity: pipelined HTTP, TCP"}
    written = []

    fig, axes = plt.subplots(1, len(panels), figsize=(7.5 * len(panels), 6), dpi=110, squeeze=False)
    for ax, (one_in_flight, series) in zip(axes[0], panels):
        for n, (label, style, cases) in enumerate(series):
            _plot_labelled(ax, [c["batch"] for c in cases], [c["events_per_second"] for c in cases],
                           f"C{n % 10}", label, style, left=n % 2 == 1)
        if not one_in_flight:
            for key, color in (("pyarrow", "tab:gray"), ("duckdb-read-ndjson", "tab:olive")):
                figure = baseline(document, key, document["settings"]["shapes"][0])
                if figure:
                    ax.axhline(figure["events_per_second"], color=color, linestyle=":", linewidth=1.2,
                               label=f"{figure['name']}: {_short(figure['events_per_second'])}")
        _log_axes(ax)
        ax.set_xlabel("events per request (HTTP) or per send() (TCP)")
        ax.set_ylabel("events/s, first byte sent → landed")
        ax.set_title(titles[one_in_flight], fontsize=10)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(_plot_title(document, "throughput"), fontsize=10)
    fig.tight_layout()
    written.append(_save(fig, out / PLOTS[0]))

    fig, axes = plt.subplots(len(panels), 2, figsize=(16, 5.5 * len(panels)), dpi=110, squeeze=False)
    for row, (one_in_flight, series) in zip(axes, panels):
        for n, (label, style, cases) in enumerate(series):
            batches = [c["batch"] for c in cases]
            for ax, kind in zip(row, ("ack", "landed")):
                if cases[0]["latency_ms"][kind] is None:  # TCP: no acknowledgement
                    continue
                for percentile, width in (("p50", 1.6), ("p99", 0.8)):
                    _plot_labelled(ax, batches, [c["latency_ms"][kind][percentile] for c in cases], f"C{n % 10}",
                                   label if percentile == "p50" else "_nolegend_",
                                   {**style, "linewidth": width,
                                    "linestyle": style["linestyle"] if percentile == "p50" else ":"},
                                   left=n % 2 == 1)
        for ax, what in zip(row, ("HTTP acknowledgement (round trip)", "sent → landed")):
            _log_axes(ax)
            ax.set_xlabel("events per request / send()")
            ax.set_ylabel("ms: p50 (marked line), p99 (dotted)")
            ax.set_title(f"{what} — {titles[one_in_flight]}", fontsize=9)
        handles, labels = row[1].get_legend_handles_labels()  # every series has a landed latency
        row[1].legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    fig.suptitle(_plot_title(document, "latency percentiles"), fontsize=10)
    fig.tight_layout()
    written.append(_save(fig, out / PLOTS[1]))
    return written


def _plot_labelled(ax, xs: list, ys: list, color: str, label: str, style: dict, left: bool = False) -> None:
    """A line with each point's value written beside it (e.g. 438k), on its
    left or right: alternating between series keeps close points' labels apart."""
    ax.plot(xs, ys, color=color, label=label, markersize=5, **style)
    for x, y in zip(xs, ys):
        ax.annotate(_short(y), (x, y), textcoords="offset points", xytext=(-6 if left else 6, 2), fontsize=7,
                    color=color, ha="right" if left else "left", va="center")


def _log_axes(ax) -> None:
    """Log scales with 1, 2 and 5 of each decade labelled (1, 2, 5, 10, 20 ... 1M),
    major and minor gridlines; x: 1 to 10,000 events. Call it once the lines are drawn."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(0.35, 25_000)  # room for the labels left of the first points and right of the last
    ax.set_xticks([1, 10, 100, 1_000, 10_000])
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: _short(value)))
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: _short(value)))
    ax.yaxis.set_minor_locator(LogLocator(base=10, subs=tuple(range(1, 10))))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, which="major", alpha=0.5)
    ax.grid(True, which="minor", alpha=0.15)
    low, high = ax.get_ylim()
    if high < 10 * low:  # at least a decade, or the 1-2-5 labels are too few to read a value off
        middle = (low * high) ** 0.5
        ax.set_ylim(middle / 10 ** 0.5, middle * 10 ** 0.5)


def _short(value: float) -> str:
    """Three significant digits with k or M: 438k, 1.93M, 59, 0.59."""
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.3g}"


def _plot_title(document: dict, what: str) -> str:
    m = document["machine"]
    return f"ingest {document['versions']['ingest']} {what} — {m['cpu_count']} × {m['cpu_model']}"


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path)
    plt.close(fig)
    return path
