"""memsys.tslab against real snapshots written by the `tslab` binary (target/debug/tslab).

The snapshot is `tslab demo --json-out` (a real workload with a leaked epoch); the live
endpoint is `tslab serve --listen 127.0.0.1:0` re-serving that file.
"""

from __future__ import annotations

import ast
import errno
import http.server
import json
import math
import os
import re
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

import memsys
from memsys import tslab

STUB = Path(__file__).resolve().parents[1] / "python" / "memsys" / "tslab.pyi"

ERROR_CLASSES = [
    "IoError",
    "TooLargeError",
    "NotRegularFileError",
    "JsonError",
    "MissingSchemaVersionError",
    "UnknownSchemaVersionError",
    "SchemaError",
    "HttpError",
    "CorpusError",
    "RequestError",
    "UsageError",
    "AllocError",
]


def tslab_bin(bin_dir: Path) -> Path:
    p = bin_dir / "tslab"
    if not p.is_file():
        pytest.fail(f"{p} is missing: build it (cargo build -p tslab)")
    return p


@pytest.fixture(scope="session")
def snap_file(bin_dir: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tslab") / "snap.json"
    subprocess.run(
        [
            str(tslab_bin(bin_dir)),
            "demo",
            "--requests",
            "600",
            "--batch",
            "50",
            "--inject-leak",
            "--listen",
            "none",
            "--json-out",
            str(out),
            "-q",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return out


@pytest.fixture(scope="session")
def doc(snap_file: Path) -> dict:
    with open(snap_file) as f:
        return json.load(f)


@pytest.fixture(scope="session")
def snap(snap_file: Path) -> tslab.Snapshot:
    return tslab.Snapshot.load(snap_file)


@pytest.fixture
def served(bin_dir: Path, snap_file: Path):
    """`tslab serve` on a free port of 127.0.0.1; yields its base URL, stops it after."""
    proc = subprocess.Popen(
        [str(tslab_bin(bin_dir)), "serve", "--listen", "127.0.0.1:0", str(snap_file)],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stderr.readline()
        m = re.search(r"http://(127\.0\.0\.1:\d+)/metrics", line)
        assert m, f"tslab serve said {line!r}"
        yield f"http://{m.group(1)}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# ---- loading a real snapshot from a file ------------------------------------------------


def test_demo_snapshot_is_a_real_one_with_classes_and_epochs(doc):
    # The other tests compare against this document: it must not be trivially empty.
    assert doc["schema_version"] == 1
    assert len(doc["classes"]) > 0
    assert len(doc["epochs"]) > 1
    assert any(e["estimated_rss_bytes"] > 0 for e in doc["epochs"])
    assert any(e["label"].startswith("leak:") for e in doc["epochs"])


def test_every_scalar_field_of_the_json_is_an_equal_property(snap, doc):
    scalars = {k: v for k, v in doc.items() if not isinstance(v, (dict, list))}
    assert len(scalars) > 20
    for key, value in scalars.items():
        assert getattr(snap, key) == value, key
        assert type(getattr(snap, key)) is int, key


def test_label_registry_and_origin_match_the_file(snap, doc, snap_file):
    assert snap.label_registry == doc["label_registry"]
    assert snap.origin == str(snap_file)
    assert snap.has_epochs is True


def test_classes_and_epochs_are_the_jsons_lists_of_dicts(snap, doc):
    classes, epochs = snap.classes(), snap.epochs()
    assert len(classes) == len(doc["classes"])
    assert len(epochs) == len(doc["epochs"])
    assert classes == doc["classes"]
    assert epochs == doc["epochs"]
    assert all(type(c) is dict for c in classes) and all(type(e) is dict for e in epochs)


def test_to_dict_equals_json_load_of_the_same_file(snap, doc):
    assert snap.to_dict() == doc


def test_load_takes_a_pathlike_and_a_str_alike(snap_file, snap):
    assert tslab.Snapshot.load(str(snap_file)) == snap
    assert tslab.Snapshot.load(Path(snap_file)) == snap


def test_from_json_of_to_json_round_trips(snap):
    again = tslab.Snapshot.from_json(snap.to_json(), "again")
    assert again == snap
    assert again.origin == "again"
    assert tslab.Snapshot.from_json(snap.to_json().encode()) == snap


def test_a_real_snapshot_passes_validation(snap_file, snap):
    assert tslab.Snapshot.load(snap_file, validate=True) == snap


def test_repr_is_one_short_line_naming_pid_and_counts(snap, doc):
    r = repr(snap)
    assert "\n" not in r and len(r) < 300
    assert f"pid={doc['pid']}" in r
    assert f"classes={len(doc['classes'])}" in r
    assert f"epochs={len(doc['epochs'])}" in r


# ---- rankings and reports (tslab::report) ----------------------------------------------


def expected_top_epochs(doc, key, n, ascending=False):
    sign = 1 if ascending else -1
    return sorted(doc["epochs"], key=lambda e: (sign * key(e), e["epoch_id"]))[:n]


EPOCH_KEYS = {
    "rss_bytes": lambda d: lambda e: e["estimated_rss_bytes"],
    "age_sec": lambda d: lambda e: e["age_sec"],
    "refcount": lambda d: lambda e: e["refcount"],
    "reclaimable_bytes": lambda d: lambda e: e["total_reclaimable_slabs"] * d["page_size"],
}


@pytest.mark.parametrize("ascending", [False, True])
@pytest.mark.parametrize("by", sorted(EPOCH_KEYS))
def test_top_epochs_order_matches_a_sort_done_here(snap, doc, by, ascending):
    key = EPOCH_KEYS[by](doc)
    got = snap.top_epochs(by=by, n=5, ascending=ascending)
    want = expected_top_epochs(doc, key, 5, ascending)
    assert [(e["epoch_id"], e["epoch_era"]) for e in got] == [
        (e["epoch_id"], e["epoch_era"]) for e in want
    ]
    for row in got:
        assert row["value"] == float(key(row))
        assert {k: v for k, v in row.items() if k != "value"} in doc["epochs"]


def test_top_epochs_defaults_to_rss_ten_rows_and_rss_is_an_alias(snap, doc):
    want = expected_top_epochs(doc, lambda e: e["estimated_rss_bytes"], 10)
    got = snap.top_epochs()
    assert len(got) == min(10, len(doc["epochs"]))
    assert [e["epoch_id"] for e in got] == [e["epoch_id"] for e in want]
    assert snap.top_epochs(by="rss") == got
    assert tslab.Snapshot.EPOCH_METRICS == ("rss_bytes", "age_sec", "refcount", "reclaimable_bytes")


def test_top_epochs_with_before_ranks_by_rate_per_second(doc):
    before = json.loads(json.dumps(doc))
    after = json.loads(json.dumps(doc))
    after["timestamp_ns"] = before["timestamp_ns"] + 2_000_000_000
    target = after["epochs"][-1]
    target["estimated_rss_bytes"] += 8192
    b = tslab.Snapshot.from_json(json.dumps(before))
    a = tslab.Snapshot.from_json(json.dumps(after))
    top = a.top_epochs(n=1, before=b)
    assert top[0]["epoch_id"] == target["epoch_id"]
    assert top[0]["value"] == pytest.approx(4096.0)


def test_top_epochs_of_a_snapshot_without_epochs_is_empty(doc):
    old = {k: v for k, v in doc.items() if k != "epochs"}
    s = tslab.Snapshot.from_json(json.dumps(old))
    assert s.has_epochs is False
    assert s.epochs() == []
    assert s.top_epochs() == []
    assert "epochs=none" in repr(s)


def test_top_classes_order_matches_a_sort_done_here(snap, doc):
    for by in tslab.Snapshot.CLASS_METRICS:
        got = snap.top_classes(by=by, n=4)
        want = sorted(doc["classes"], key=lambda c: (-c[by], c["class"]))[:4]
        assert [c["class"] for c in got] == [c["class"] for c in want], by
        assert [c["value"] for c in got] == [float(c[by]) for c in want], by


def test_summary_is_the_stats_commands_with_three_top_epochs(snap, doc):
    s = snap.summary()
    assert s["pid"] == doc["pid"]
    assert s["rss_bytes"] == doc["rss_bytes"]
    assert s["allocs"] == sum(c["allocs"] for c in doc["classes"])
    assert s["epochs_active"] + s["epochs_closing"] == len(doc["epochs"])
    assert [e["epoch_id"] for e in s["top_epochs_by_rss"]] == [
        e["epoch_id"] for e in snap.top_epochs(n=3)
    ]


def test_diff_flags_an_rss_regression_and_not_identical_snapshots(snap, doc):
    same = snap.diff(snap)
    assert same["regressed"] is False
    assert [r["metric"] for r in same["rows"]] == [
        "slow_path_rate",
        "madvise_failures",
        "rss_bytes",
        "lock_contention_rate",
    ]
    bigger = dict(doc, rss_bytes=doc["rss_bytes"] * 2)
    d = snap.diff(tslab.Snapshot.from_json(json.dumps(bigger)), threshold_pct=5.0)
    assert d["regressed"] is True
    rss = next(r for r in d["rows"] if r["metric"] == "rss_bytes")
    assert rss["regression"] is True and rss["change_pct"] == pytest.approx(100.0)
    assert d["threshold_pct"] == 5.0


# ---- loading from a live endpoint --------------------------------------------------------


def test_load_from_a_live_endpoint_url_equals_the_file(served, snap):
    s = tslab.Snapshot.load(served)  # no path: /stats.json
    assert s.origin == f"{served}/stats.json"
    assert s == snap
    assert tslab.Snapshot.load(f"{served}/stats.json") == snap


def test_a_404_path_of_the_endpoint_raises_http_error(served):
    with pytest.raises(tslab.HttpError) as ei:
        tslab.Snapshot.load(f"{served}/nope")
    assert ei.value.url == f"{served}/nope"
    assert "404" in str(ei.value)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_refused_connection_raises_http_error_at_once():
    url = f"http://127.0.0.1:{free_port()}/stats.json"
    t0 = time.monotonic()
    with pytest.raises(tslab.HttpError) as ei:
        tslab.Snapshot.load(url)
    assert time.monotonic() - t0 < 2.0
    assert ei.value.origin == url


def test_a_server_that_never_answers_times_out_with_http_error():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)  # accepted by the kernel, never answered
    port = listener.getsockname()[1]
    try:
        t0 = time.monotonic()
        with pytest.raises(tslab.HttpError):
            tslab.Snapshot.load(f"http://127.0.0.1:{port}/stats.json")
        elapsed = time.monotonic() - t0
        assert tslab.Snapshot.HTTP_TIMEOUT - 0.5 <= elapsed < tslab.Snapshot.HTTP_TIMEOUT + 3
    finally:
        listener.close()


class _Endless(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        chunk = b" " * (1 << 20)
        try:
            for _ in range(tslab.Snapshot.MAX_INPUT_BYTES // len(chunk) + 8):
                self.wfile.write(chunk)
        except OSError:
            pass

    def log_message(self, *args):
        pass


def test_an_endpoint_sending_past_the_bound_raises_too_large():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Endless)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/stats.json"
        with pytest.raises(tslab.TooLargeError) as ei:
            tslab.Snapshot.load(url)
        assert ei.value.limit == tslab.Snapshot.MAX_INPUT_BYTES
        assert ei.value.origin == url
    finally:
        server.shutdown()
        server.server_close()


# ---- hostile input --------------------------------------------------------------------------


def _symlink(tmp: Path, good: Path) -> Path:
    p = tmp / "link.json"
    p.symlink_to(good)
    return p


def _directory(tmp: Path, good: Path) -> Path:
    p = tmp / "dir.json"
    p.mkdir()
    return p


def _fifo(tmp: Path, good: Path) -> Path:
    p = tmp / "fifo.json"
    os.mkfifo(p)  # nobody writes: opening it blocking would hang
    return p


def _write(name: str, data: bytes):
    def make(tmp: Path, good: Path) -> Path:
        p = tmp / name
        p.write_bytes(data)
        return p

    return make


def _truncated(tmp: Path, good: Path) -> Path:
    p = tmp / "truncated.json"
    data = good.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return p


def _oversized(tmp: Path, good: Path) -> Path:
    p = tmp / "huge.json"
    with open(p, "wb") as f:
        f.truncate(tslab.Snapshot.MAX_INPUT_BYTES + 1)  # sparse: instant
    return p


def _field(name: str, value):
    def make(tmp: Path, good: Path) -> Path:
        doc = json.loads(good.read_text())
        doc[name] = value
        p = tmp / f"bad-{name}.json"
        p.write_text(json.dumps(doc))
        return p

    return make


def _without(name: str):
    def make(tmp: Path, good: Path) -> Path:
        doc = json.loads(good.read_text())
        del doc[name]
        p = tmp / f"no-{name}.json"
        p.write_text(json.dumps(doc))
        return p

    return make


HOSTILE = [
    ("symlink", _symlink, "NotRegularFileError", {"kind": "symbolic link, not followed"}),
    ("directory", _directory, "NotRegularFileError", {"kind": "directory"}),
    ("char-device", lambda t, g: Path("/dev/zero"), "NotRegularFileError", {"kind": "character device"}),
    ("fifo", _fifo, "NotRegularFileError", {"kind": "fifo"}),
    ("missing", lambda t, g: t / "missing.json", "IoError", {"errno": errno.ENOENT}),
    ("not-utf8", _write("latin1.json", b'{"schema_version": 1, "x": "\xe9"}'), "IoError", {}),
    ("oversized", _oversized, "TooLargeError", {"limit": 64 * 1024 * 1024}),
    ("truncated", _truncated, "JsonError", {"category": "eof"}),
    ("garbage", _write("garbage.json", b"\x00\x01garbage{{{"), "JsonError", {"category": "syntax"}),
    ("empty", _write("empty.json", b""), "JsonError", {"category": "eof"}),
    ("wrong-type", _field("pid", "not a number"), "JsonError", {"category": "data"}),
    ("negative", _field("rss_bytes", -1), "JsonError", {"category": "data"}),
    ("bad-state", _field("epochs", [{"epoch_id": 0, "state": "NOPE"}]), "JsonError", {}),
    ("no-version", _without("schema_version"), "MissingSchemaVersionError", {"field": "schema_version"}),
    ("json-array", _write("array.json", b"[1, 2, 3]"), "JsonError", {}),
    ("json-number", _write("number.json", b"3"), "JsonError", {"category": "data"}),
    ("version-2", _field("schema_version", 2), "UnknownSchemaVersionError", {"found": "2"}),
    ("version-str", _field("schema_version", "1"), "UnknownSchemaVersionError", {"found": '"1"'}),
    ("no-classes", _without("classes"), "JsonError", {"category": "data"}),
]


@pytest.mark.parametrize(
    "make, cls, attrs", [h[1:] for h in HOSTILE], ids=[h[0] for h in HOSTILE]
)
def test_hostile_file_raises_its_own_typed_error_in_one_line(
    tmp_path, snap_file, make, cls, attrs
):
    path = make(tmp_path, snap_file)
    t0 = time.monotonic()
    with pytest.raises(tslab.TslabError) as ei:
        tslab.Snapshot.load(path)
    assert time.monotonic() - t0 < 5.0  # a FIFO must not block
    e = ei.value
    assert type(e) is getattr(tslab, cls), f"{type(e).__name__}: {e}"
    assert isinstance(e, memsys.MemsysError)
    msg = str(e)
    assert "\n" not in msg and 0 < len(msg) < 1000
    assert e.origin == str(path)
    assert str(path) in msg
    for k, v in attrs.items():
        assert getattr(e, k) == v, k


def test_schema_violation_raises_schema_error_only_when_validating(tmp_path, snap_file):
    path = _field("page_size", 0)(tmp_path, snap_file)
    assert tslab.Snapshot.load(path).page_size == 0  # as `tslab stats` reads it
    with pytest.raises(tslab.SchemaError) as ei:
        tslab.Snapshot.load(path, validate=True)
    assert ei.value.instance_path == "/page_size"
    assert ei.value.field == "/page_size"
    assert "\n" not in str(ei.value)


def test_json_error_names_line_and_column(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('{\n  "schema_version": 1,\n  "pid": oops\n}')
    with pytest.raises(tslab.JsonError) as ei:
        tslab.Snapshot.load(p)
    assert (ei.value.line, ei.value.column) == (3, 10)


def test_a_long_hostile_value_is_clipped_in_the_message(snap_file):
    doc = json.loads(snap_file.read_text())
    doc["schema_version"] = "x" * 100_000
    with pytest.raises(tslab.UnknownSchemaVersionError) as ei:
        tslab.Snapshot.from_json(json.dumps(doc))
    assert len(str(ei.value)) < 1000
    assert len(ei.value.found) == 100_002  # the attribute keeps it whole


@pytest.mark.parametrize(
    "call, cls",
    [
        (lambda: tslab.Snapshot.load("https://127.0.0.1:1/stats.json"), "UsageError"),
        (lambda: tslab.Snapshot.load("-"), "UsageError"),
        (lambda: tslab.Snapshot.from_json(b"\xff\xfe"), "IoError"),
        (lambda: tslab.Snapshot.from_json("{}"), "MissingSchemaVersionError"),
        (lambda: tslab.Snapshot.from_json("x" * (tslab.Snapshot.MAX_INPUT_BYTES + 1)), "TooLargeError"),
    ],
    ids=["https", "stdin-dash", "bytes-not-utf8", "empty-object", "text-too-large"],
)
def test_bad_argument_raises_its_typed_error(call, cls):
    with pytest.raises(tslab.TslabError) as ei:
        call()
    assert type(ei.value) is getattr(tslab, cls)


@pytest.mark.parametrize(
    "call",
    [
        lambda s: s.top_epochs(by="bogus"),
        lambda s: s.top_classes(by="rss_bytes"),
        lambda s: s.diff(s, threshold_pct=math.nan),
        lambda s: s.diff(s, threshold_pct=-1.0),
        lambda s: s.diff(s, threshold_pct=math.inf),
    ],
    ids=["epoch-metric", "class-metric", "nan-threshold", "negative-threshold", "inf-threshold"],
)
def test_bad_report_argument_raises_usage_error(snap, call):
    with pytest.raises(tslab.UsageError) as ei:
        call(snap)
    assert ei.value.message == str(ei.value)


def test_a_source_of_the_wrong_type_is_a_type_error():
    with pytest.raises(TypeError):
        tslab.Snapshot.load(42)


# ---- the exception hierarchy and the stub ----------------------------------------------------


def test_tslab_error_is_a_memsys_error_in_module_memsys_tslab():
    assert issubclass(tslab.TslabError, memsys.MemsysError)
    assert tslab.TslabError.__module__ == "memsys.tslab"
    assert tslab.Snapshot.__module__ == "memsys.tslab"


@pytest.mark.parametrize("name", ERROR_CLASSES)
def test_each_error_variant_is_its_own_direct_subclass_of_tslab_error(name):
    cls = getattr(tslab, name)
    assert cls.__bases__ == (tslab.TslabError,)
    assert cls.__module__ == "memsys.tslab"
    assert cls.__doc__
    others = [getattr(tslab, n) for n in ERROR_CLASSES if n != name]
    assert not any(issubclass(cls, o) or issubclass(o, cls) for o in others)


def test_the_stub_declares_every_public_name_and_property():
    tree = ast.parse(STUB.read_text())
    declared = set()
    members: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            declared.add(node.name)
            members[node.name] = {n.name for n in node.body if isinstance(n, ast.FunctionDef)} | {
                n.target.id
                for n in node.body
                if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
            }
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            declared.add(node.target.id)
    public = {n for n in dir(tslab) if not n.startswith("_")}
    assert public <= declared, public - declared
    snap_public = {n for n in dir(tslab.Snapshot) if not n.startswith("_")}
    assert snap_public <= members["Snapshot"], snap_public - members["Snapshot"]
    assert set(ERROR_CLASSES) | {"TslabError"} <= declared
