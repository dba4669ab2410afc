"""A DataHub broker client in Python, written from docs/datahub-broker.md alone.

Run by crates/datahub-cli/tests/python_interop.rs, which starts `datahub broker` and sets
DATAHUB_BIN (the `datahub` binary) and DATAHUB_BROKER (its endpoint). Needs pyzmq and pytest.

Checks: the channel list; discovery of a channel that `datahub pub --channel` registered, with
every announced field; a channel registered (and heartbeated) from here that
`datahub channels --json` shows; a layout fingerprint computed here that the broker accepts;
and the documented errors for bad requests.
"""

import hashlib
import itertools
import json
import os
import re
import subprocess
import tempfile
import time

import pytest
import zmq

BIN = os.environ.get("DATAHUB_BIN", "")
EP = os.environ.get("DATAHUB_BROKER", "")
PROTOCOL = {"major": 1, "minor": 2}
FINGERPRINT = re.compile(r"^DHS01_[0-9a-f]{64}$")
TIMEOUT_MS = 5000
_uids = itertools.count()

pytestmark = pytest.mark.skipif(
    not (BIN and EP), reason="DATAHUB_BIN and DATAHUB_BROKER are set by python_interop.rs"
)


def start_time(pid):
    """Field 22 of /proc/PID/stat (clock ticks since boot)."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # Fields after the command name (which may contain spaces) start at field 3.
    return int(stat[stat.rindex(")") + 2 :].split()[22 - 3])


class Peer:
    """One DEALER whose routing id is the role uid."""

    def __init__(self, ctx, uid=None):
        self.uid = uid or f"py-{os.getpid()}-{next(_uids)}"
        self.sock = ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.ROUTING_ID, self.uid.encode())
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(EP)
        self.corr = itertools.count(1)
        self.heartbeat_ms = 500

    def close(self):
        self.sock.close()

    def send_frames(self, frames):
        self.sock.send_multipart(frames)

    def send(self, msg_type, body, corr):
        full = {"protocol": PROTOCOL}
        full.update(body)
        self.send_frames([b"C", msg_type.encode(), corr, json.dumps(full).encode()])

    def recv(self, timeout_ms=TIMEOUT_MS):
        """The next message as (msg_type, correlation id, body); fails after timeout_ms."""
        if not self.sock.poll(timeout_ms):
            raise AssertionError(f"no message from the broker within {timeout_ms} ms")
        frames = self.sock.recv_multipart()
        assert len(frames) == 4, frames
        assert frames[0] == b"C", frames
        return frames[1].decode(), frames[2], json.loads(frames[3])

    def recv_for(self, corr, timeout_ms=TIMEOUT_MS):
        """The reply with correlation id `corr` (other messages are skipped)."""
        end = time.monotonic() + timeout_ms / 1000
        while True:
            left = int((end - time.monotonic()) * 1000)
            assert left > 0, f"no reply with correlation id {corr!r}"
            msg_type, c, body = self.recv(left)
            if c == corr:
                return msg_type, body

    def recv_note(self, msg_type, timeout_ms=TIMEOUT_MS):
        """The next notification (empty correlation id) of type `msg_type`; others are skipped."""
        end = time.monotonic() + timeout_ms / 1000
        while True:
            left = int((end - time.monotonic()) * 1000)
            assert left > 0, f"no {msg_type} within {timeout_ms} ms"
            t, c, body = self.recv(left)
            if c == b"" and t == msg_type:
                return body

    def request(self, msg_type, body):
        corr = str(next(self.corr)).encode()
        self.send(msg_type, body, corr)
        reply_type, reply = self.recv_for(corr)
        assert "protocol" in reply and reply["protocol"]["major"] == 1, reply
        if reply_type != "ERROR":
            assert reply["status"] == "ok", reply
            hb = reply["heartbeat"]
            for k in ("interval_ms", "pending_after_misses", "dead_after_misses"):
                assert isinstance(hb[k], int) and hb[k] >= 1, reply
            self.heartbeat_ms = hb["interval_ms"]
        else:
            assert_error_shape(reply)
        return reply_type, reply

    def heartbeat(self, channel, role):
        self.send("HEARTBEAT_NOTIFY", {"channel_name": channel, "role": role}, b"")


def assert_error_shape(body):
    assert body["status"] == "error", body
    assert isinstance(body["error_code"], str), body
    assert isinstance(body["message"], str), body
    assert len(body["message"].encode()) <= 512, body
    assert body["protocol"]["major"] == 1, body


@pytest.fixture
def ctx():
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


@pytest.fixture
def peer(ctx):
    p = Peer(ctx)
    yield p
    p.close()


def expect_error(peer, msg_type, body, code):
    reply_type, reply = peer.request(msg_type, body)
    assert reply_type == "ERROR", (msg_type, reply)
    assert reply["error_code"] == code, reply
    return reply


def discover(peer, channel, deadline_s=20):
    """DISC_REQ until DISC_ACK, retrying DISC_PENDING and CHANNEL_NOT_FOUND with backoff."""
    end = time.monotonic() + deadline_s
    delay = 0.005
    while True:
        reply_type, reply = peer.request("DISC_REQ", {"channel_name": channel})
        if reply_type == "DISC_ACK":
            return reply
        if reply_type == "ERROR":
            assert reply["error_code"] == "CHANNEL_NOT_FOUND", reply
        else:
            assert reply_type == "DISC_PENDING", (reply_type, reply)
            assert reply["channel_name"] == channel, reply
        assert time.monotonic() < end, f"channel {channel} not live within {deadline_s} s"
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def canonical(zones):
    """The canonical layout text (scheme 1) of {zone: (size, align, [(name, type, offset, count)])}."""
    sizes = {"u8": 1, "i8": 1, "u16": 2, "i16": 2, "u32": 4, "i32": 4, "u64": 8, "i64": 8,
             "f32": 4, "f64": 8}
    lines = ["datahub-schema 1"]
    for zone in ("slot", "flex"):
        if zone not in zones:
            continue
        size, align, fields = zones[zone]
        lines.append(f"zone {zone} size={size} align={align}")
        for name, ty, offset, count in sorted(fields, key=lambda f: f[2]):
            line = f"{name}:{ty}:{offset}:{sizes[ty] * count}"
            if count > 1:
                line += f":{count}"
            lines.append(line)
    return "".join(line + "\n" for line in lines)


def fingerprint(zones):
    return "DHS01_" + hashlib.blake2b(canonical(zones).encode(), digest_size=32).hexdigest()


def fields_json(zones):
    return {
        zone: {
            "size": size,
            "align": align,
            "fields": [{"name": n, "type": t, "offset": o, "count": c} for n, t, o, c in fields],
        }
        for zone, (size, align, fields) in zones.items()
    }


# A #[repr(C)] { x: f64, y: f64, ids: [u32; 2] } slot, as a numpy dtype would describe it.
POSE = {"slot": (24, 8, [("x", "f64", 0, 1), ("y", "f64", 8, 1), ("ids", "u32", 16, 2)])}


def reg_body(peer, channel, fp, **over):
    body = {
        "channel_name": channel,
        "role_uid": peer.uid,
        "block_name": f"{channel}-blk",
        "policy": "latest",
        "slot_size": 24,
        "slot_count": 8,
        "flex_zone_size": 0,
        "max_consumers": 8,
        "checksum": "none",
        "keyed": False,
        "format_version": {"major": 1, "minor": 0},
        "layout_hash": "0123456789abcdef",
        "schema": {"id": "py.Pose", "version": 2, "fingerprint": fp},
        "producer_pid": os.getpid(),
        "producer_start_time": start_time(os.getpid()),
    }
    body.update(over)
    return body


def test_channel_list_is_answered_with_a_sorted_list(peer):
    reply_type, reply = peer.request("CHANNEL_LIST_REQ", {})
    assert reply_type == "CHANNEL_LIST_ACK", reply
    names = [c["channel_name"] for c in reply["channels"]]
    assert names == sorted(names), names


def test_a_higher_or_lower_minor_version_is_accepted(peer):
    for minor in (9, 0):
        corr = f"m{minor}".encode()
        peer.send("CHANNEL_LIST_REQ", {"protocol": {"major": 1, "minor": minor}}, corr)
        reply_type, reply = peer.recv_for(corr)
        assert reply_type == "CHANNEL_LIST_ACK", reply


def test_discovers_a_channel_that_datahub_pub_registered(peer, tmp_path):
    channel = f"py.pub.{os.getpid()}"
    data = tmp_path / "payload.bin"
    data.write_bytes(os.urandom(1000))
    # pub waits for a consumer that never comes: it stays registered while we look.
    pub = subprocess.Popen(
        [BIN, "pub", "--broker", EP, "--channel", channel, "--wait", "60", "--slots", "8",
         str(data)],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        ack = discover(peer, channel)
        assert ack["channel_name"] == channel
        assert isinstance(ack["role_uid"], str) and 1 <= len(ack["role_uid"]) <= 128
        assert ack["block_name"] == channel  # the default block name is the channel's
        assert os.path.exists(f"/dev/shm/{ack['block_name']}")
        assert ack["policy"] == "sequential"
        assert ack["slot_size"] == 65536
        assert ack["slot_count"] == 8
        assert ack["flex_zone_size"] == 0
        assert 1 <= ack["max_consumers"] <= 64
        assert ack["checksum"] == "enforced"
        assert ack["keyed"] is False
        assert set(ack["format_version"]) >= {"major", "minor"}
        assert re.fullmatch(r"[0-9a-f]{16}", ack["layout_hash"]), ack
        assert ack["schema"]["id"] == "datahub.files"
        assert ack["schema"]["version"] == 1
        assert FINGERPRINT.match(ack["schema"]["fingerprint"]), ack
        assert ack["producer_pid"] == pub.pid
        assert ack["producer_start_time"] == start_time(pub.pid)

        # The listing shows it live.
        _, listing = peer.request("CHANNEL_LIST_REQ", {})
        mine = [c for c in listing["channels"] if c["channel_name"] == channel]
        assert len(mine) == 1 and mine[0]["state"] == "live", listing
        assert mine[0]["schema"]["fingerprint"] == ack["schema"]["fingerprint"]

        # Citing the right fingerprint discovers it; another one is SCHEMA_MISMATCH.
        reply_type, _ = peer.request(
            "DISC_REQ",
            {"channel_name": channel, "schema_fingerprint": ack["schema"]["fingerprint"]},
        )
        assert reply_type == "DISC_ACK"
        expect_error(peer, "DISC_REQ",
                     {"channel_name": channel, "schema_fingerprint": "DHS01_" + "0" * 64},
                     "SCHEMA_MISMATCH")
        _, schema = peer.request("SCHEMA_REQ", {"channel_name": channel})
        assert schema["schema"]["fingerprint"] == ack["schema"]["fingerprint"]
    finally:
        pub.terminate()
        try:
            pub.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pub.kill()
            pub.wait()
    # SIGTERM: pub deregistered its channel and exited 128 + 15.
    assert pub.returncode == 143, pub.stderr.read()
    expect_error(peer, "DISC_REQ", {"channel_name": channel}, "CHANNEL_NOT_FOUND")


def test_registers_a_channel_that_datahub_channels_shows(peer):
    channel = f"py.own.{os.getpid()}"
    fp = fingerprint(POSE)
    reply_type, ack = peer.request("REG_REQ", reg_body(peer, channel, fp))
    assert reply_type == "REG_ACK", ack
    assert ack["channel_name"] == channel
    # Before the first heartbeat a discovery is DISC_PENDING.
    reply_type, pending = peer.request("DISC_REQ", {"channel_name": channel})
    assert reply_type == "DISC_PENDING", pending
    peer.heartbeat(channel, "producer")

    # `datahub channels --json` runs while we keep heartbeating.
    with tempfile.TemporaryFile() as out:
        lister = subprocess.Popen([BIN, "channels", "--broker", EP, "--json"],
                                  stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.PIPE)
        end = time.monotonic() + 30
        while lister.poll() is None:
            assert time.monotonic() < end, "datahub channels did not finish"
            peer.heartbeat(channel, "producer")
            # A heartbeat gets no reply unless it is refused.
            if peer.sock.poll(min(peer.heartbeat_ms, 100)):
                raise AssertionError(f"unexpected message: {peer.sock.recv_multipart()}")
        assert lister.returncode == 0, lister.stderr.read()
        out.seek(0)
        listing = json.load(out)
    assert listing["broker"] == EP
    mine = [c for c in listing["channels"] if c["channel_name"] == channel]
    assert len(mine) == 1, listing
    ch = mine[0]
    assert ch["role_uid"] == peer.uid
    assert ch["block_name"] == f"{channel}-blk"
    assert ch["state"] == "live"
    assert ch["consumers"] == 0
    assert ch["schema"] == {"id": "py.Pose", "version": 2, "fingerprint": fp}
    assert ch["producer_pid"] == os.getpid()

    # DISC_ACK gives back every field of the REG_REQ.
    peer.heartbeat(channel, "producer")
    ack = discover(peer, channel)
    for k, v in reg_body(peer, channel, fp).items():
        assert ack[k] == v, (k, ack[k], v)
    # A consumer citing another fingerprint is refused; citing ours registers.
    other = Peer(peer.sock.context)
    try:
        expect_error(other, "CONSUMER_REG_REQ",
                     {"channel_name": channel, "consumer_pid": os.getpid(),
                      "schema_fingerprint": "DHS01_" + "1" * 64},
                     "SCHEMA_MISMATCH")
        reply_type, creg = other.request(
            "CONSUMER_REG_REQ",
            {"channel_name": channel, "consumer_pid": os.getpid(), "schema_fingerprint": fp})
        assert reply_type == "CONSUMER_REG_ACK", creg
        assert creg["role_uid"] == peer.uid
        # Protocol 1.1: the producer hears of its consumer joining and leaving.
        joined = peer.recv_note("CONSUMER_JOINED_NOTIFY")
        assert joined["protocol"] == {"major": 1, "minor": 2}, joined
        assert (joined["channel_name"], joined["consumer_uid"], joined["consumer_pid"],
                joined["consumers"]) == (channel, other.uid, os.getpid(), 1), joined
        reply_type, _ = other.request("CONSUMER_DEREG_REQ", {"channel_name": channel})
        assert reply_type == "CONSUMER_DEREG_ACK"
        left = peer.recv_note("CONSUMER_LEFT_NOTIFY")
        assert (left["channel_name"], left["consumer_uid"], left["reason"],
                left["consumers"]) == (channel, other.uid, "consumer_deregistered", 0), left
    finally:
        other.close()
    # Registering again with another fingerprint is SCHEMA_MISMATCH.
    expect_error(peer, "REG_REQ", reg_body(peer, channel, "DHS01_" + "2" * 64), "SCHEMA_MISMATCH")
    reply_type, _ = peer.request("DEREG_REQ", {"channel_name": channel})
    assert reply_type == "DEREG_ACK"
    expect_error(peer, "DISC_REQ", {"channel_name": channel}, "CHANNEL_NOT_FOUND")


def test_a_layout_fingerprint_computed_here_is_accepted_with_its_fields(peer):
    channel = f"py.fields.{os.getpid()}"
    body = reg_body(peer, channel, fingerprint(POSE))
    body["schema"]["fields"] = fields_json(POSE)
    reply_type, ack = peer.request("REG_REQ", body)
    assert reply_type == "REG_ACK", ack
    try:
        _, schema = peer.request("SCHEMA_REQ", {"channel_name": channel})
        got = schema["schema"]["fields"]["slot"]
        assert (got["size"], got["align"]) == (24, 8)
        assert [(f["name"], f["type"], f["offset"], f["count"]) for f in got["fields"]] == \
            POSE["slot"][2]
    finally:
        peer.request("DEREG_REQ", {"channel_name": channel})
    # Fields that do not hash to the fingerprint (a resized array) are refused.
    resized = {"slot": (28, 8, [("x", "f64", 0, 1), ("y", "f64", 8, 1), ("ids", "u32", 16, 3)])}
    body = reg_body(peer, channel, fingerprint(POSE))
    body["schema"]["fields"] = fields_json(resized)
    expect_error(peer, "REG_REQ", body, "INVALID_REQUEST")


def test_bad_requests_get_the_documented_errors(peer):
    def raw(frames, corr):
        peer.send_frames(frames)
        reply_type, reply = peer.recv_for(corr)
        assert reply_type == "ERROR", reply
        assert_error_shape(reply)
        return reply["error_code"]

    # Not JSON, not an object, no protocol, a missing field.
    assert raw([b"C", b"DISC_REQ", b"a", b"{not json"], b"a") == "INVALID_REQUEST"
    assert raw([b"C", b"DISC_REQ", b"b", b"[1, 2]"], b"b") == "INVALID_REQUEST"
    assert raw([b"C", b"DISC_REQ", b"c", b'{"channel_name": "x"}'], b"c") == "INVALID_REQUEST"
    expect_error(peer, "DISC_REQ", {}, "INVALID_REQUEST")
    expect_error(peer, "REG_REQ", {"channel_name": "py.half"}, "INVALID_REQUEST")
    # A mistyped field, a role_uid that is not the sender's routing id.
    expect_error(peer, "DISC_REQ", {"channel_name": 7}, "INVALID_REQUEST")
    expect_error(peer, "REG_REQ",
                 reg_body(peer, "py.spoof", fingerprint(POSE), role_uid="someone-else"),
                 "INVALID_REQUEST")
    # Wrong frame count, a first frame that is not C.
    assert raw([b"C", b"CHANNEL_LIST_REQ", b"d"], b"d") == "INVALID_REQUEST"
    body = json.dumps({"protocol": PROTOCOL}).encode()
    assert raw([b"X", b"CHANNEL_LIST_REQ", b"e", body], b"e") == "INVALID_REQUEST"
    # A correlation id over 64 bytes is answered with an empty one.
    assert raw([b"C", b"CHANNEL_LIST_REQ", b"z" * 65, body], b"") == "INVALID_REQUEST"
    # Protocol major 2.
    peer.send("DISC_REQ", {"protocol": {"major": 2, "minor": 0}, "channel_name": "camera"}, b"f")
    reply_type, reply = peer.recv_for(b"f")
    assert reply_type == "ERROR" and reply["error_code"] == "PROTOCOL_VERSION", reply
    assert reply["protocol"] == {"major": 1, "minor": 2}, reply
    # A type protocol 1 does not have.
    expect_error(peer, "FROBNICATE_REQ", {}, "UNKNOWN_MSG_TYPE")
    # No such channel.
    expect_error(peer, "DISC_REQ", {"channel_name": "py.nowhere"}, "CHANNEL_NOT_FOUND")
    expect_error(peer, "SCHEMA_REQ", {"channel_name": "py.nowhere"}, "CHANNEL_NOT_FOUND")
    expect_error(peer, "CONSUMER_REG_REQ", {"channel_name": "py.nowhere", "consumer_pid": 1},
                 "CHANNEL_NOT_FOUND")
    # A heartbeat and a deregistration of nothing.
    peer.heartbeat("py.nowhere", "consumer")
    reply_type, reply = peer.recv_for(b"")
    assert reply_type == "ERROR" and reply["error_code"] == "NOT_REGISTERED", reply
    assert reply["channel_name"] == "py.nowhere" and reply["role"] == "consumer", reply
    expect_error(peer, "DEREG_REQ", {"channel_name": "py.nowhere"}, "NOT_REGISTERED")
    # The broker still serves this client after all that.
    reply_type, _ = peer.request("CHANNEL_LIST_REQ", {})
    assert reply_type == "CHANNEL_LIST_ACK"


def test_another_role_uid_cannot_take_a_live_channel(ctx, peer):
    channel = f"py.taken.{os.getpid()}"
    fp = fingerprint(POSE)
    reply_type, _ = peer.request("REG_REQ", reg_body(peer, channel, fp))
    assert reply_type == "REG_ACK"
    peer.heartbeat(channel, "producer")
    thief = Peer(ctx)
    try:
        expect_error(thief, "REG_REQ", reg_body(thief, channel, fp), "CHANNEL_EXISTS")
        expect_error(thief, "DEREG_REQ", {"channel_name": channel}, "NOT_REGISTERED")
    finally:
        thief.close()
        peer.request("DEREG_REQ", {"channel_name": channel})
