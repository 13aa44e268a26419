#!/usr/bin/env python3
"""Smoke test for Janus VideoRoom on loopback, over the plain HTTP Janus API.

One publisher (aiortc, VP8 320x240@30 + Opus) and one subscriber (aiortc) in one room; checks
that the subscriber decodes video frames that came from the publisher through Janus over
127.0.0.1. Needs aiortc and aiohttp (a throwaway venv: python3 -m venv /tmp/janus-venv &&
/tmp/janus-venv/bin/pip install aiortc aiohttp).

    smoke.py                     # starts start-janus.sh in a temp dir on a free port, kills it
    smoke.py --url http://127.0.0.1:8088/janus   # use a running Janus
Options: --seconds N (media time, default 10), --sdp-dir D (write the four SDPs there),
--keepalive S (send {"janus":"keepalive"} every S s; default 0 = rely on the long poll),
--trickle MODE, how the client gives Janus its candidates: sdp (default: all in the SDP with
a=end-of-candidates, nothing else), completed (same plus a trickle {"completed": true}), false
(same plus jsep "trickle": false), noeoc (in the SDP but without a=end-of-candidates, nothing
else), trickle (none in the SDP; each sent as a trickle message, then "completed").
--drop-pct P drops P% of the publisher's VP8 packets; --room-bitrate B sets the room's REMB cap;
--probe-browser-sdp also sends a browser-like offer on a spare handle and saves Janus's answer.
Exits 0 when the subscriber got at least one video frame per second of media time.
"""
import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time

import aiohttp
import aioice.ice
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack
from av import VideoFrame

# aioice never offers 127.0.0.1 as a host candidate; on this machine everything must stay on
# loopback, so the client gathers on 127.0.0.1 only.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

HERE = os.path.dirname(os.path.abspath(__file__))

# RTCP seen per role ("pub" = Janus -> publisher, "sub" = Janus -> subscriber), and the share
# of the publisher's video RTP packets dropped on purpose (to see whether Janus NACKs).
RTCP_IN = {"pub": {}, "sub": {}}
NACKED_SEQS = {"pub": 0, "sub": 0}
DROP = {"pct": 0.0, "video_pt": None, "dropped": 0}
RTCP_NAMES = {
    ("RtcpRtpfbPacket", 1): "NACK",
    ("RtcpRtpfbPacket", 15): "TWCC",
    ("RtcpPsfbPacket", 1): "PLI",
    ("RtcpPsfbPacket", 4): "FIR",
    ("RtcpPsfbPacket", 15): "REMB",
}


def _instrument_aiortc():
    from aiortc import rtcdtlstransport
    from aiortc.rtp import RtcpPacket

    cls = rtcdtlstransport.RTCDtlsTransport
    orig_rtcp, orig_send = cls._handle_rtcp_data, cls._send_rtp

    async def handle_rtcp_data(self, data):
        role = getattr(self, "_smoke_role", None)
        if role:
            try:
                for pkt in RtcpPacket.parse(data):
                    name = type(pkt).__name__
                    name = RTCP_NAMES.get((name, getattr(pkt, "fmt", None)), name[4:-6])
                    RTCP_IN[role][name] = RTCP_IN[role].get(name, 0) + 1
                    if name == "NACK":
                        NACKED_SEQS[role] += len(pkt.lost)
            except ValueError:
                pass
        return await orig_rtcp(self, data)

    async def send_rtp(self, data):
        if (
            DROP["pct"] > 0
            and getattr(self, "_smoke_role", None) == "pub"
            and not (192 <= data[1] <= 223)  # not RTCP
            and (data[1] & 0x7F) == DROP["video_pt"]  # original VP8, not RTX
            and random.random() * 100 < DROP["pct"]
        ):
            DROP["dropped"] += 1
            return
        return await orig_send(self, data)

    cls._handle_rtcp_data = handle_rtcp_data
    cls._send_rtp = send_rtp


_instrument_aiortc()


def tag(pc, role):
    for t in pc.getTransceivers():
        for tr in (t.sender.transport, t.receiver.transport):
            if tr is not None:
                tr._smoke_role = role


BROWSER_EXTMAPS = {
    "audio": [
        "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
        "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
        "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time",
    ],
    "video": [
        "urn:ietf:params:rtp-hdrext:toffset",
        "urn:3gpp:video-orientation",
        "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01",
        "http://www.webrtc.org/experiments/rtp-hdrext/playout-delay",
        "http://www.webrtc.org/experiments/rtp-hdrext/video-content-type",
        "http://www.webrtc.org/experiments/rtp-hdrext/video-timing",
        "http://www.webrtc.org/experiments/rtp-hdrext/color-space",
        "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id",
        "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id",
        "https://aomediacodec.github.io/av1-rtp-spec/#dependency-descriptor-rtp-header-extension-v00",
        "http://www.webrtc.org/experiments/rtp-hdrext/abs-capture-time",
    ],
}


def browserize(sdp):
    """Adds the RTP header extensions (and VP8 transport-cc/ccm fir feedback) a browser offers."""
    out, kind, next_id = [], None, 5
    for line in sdp.splitlines():
        if line.startswith("m="):
            kind = line[2:].split()[0]
        out.append(line)
        if kind and line.startswith("a=mid:"):
            for uri in BROWSER_EXTMAPS.get(kind, []):
                out.append(f"a=extmap:{next_id} {uri}")
                next_id += 1
        if line.startswith("a=rtcp-fb:") and line.endswith(" goog-remb"):
            pt = line.split(":")[1].split()[0]
            out += [f"a=rtcp-fb:{pt} transport-cc", f"a=rtcp-fb:{pt} ccm fir"]
    return "\r\n".join(out) + "\r\n"


def txn():
    return "".join(random.choices(string.ascii_letters + string.digits, k=12))


class MovingBars(VideoStreamTrack):
    """320x240 frames with a moving luma bar, so VP8 produces real deltas."""

    W, H = 320, 240

    def __init__(self):
        super().__init__()
        self.n = 0

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame(width=self.W, height=self.H, format="yuv420p")
        y = bytearray(frame.planes[0].buffer_size)
        stride = frame.planes[0].line_size
        x0 = (self.n * 4) % self.W
        for row in range(self.H):
            base = row * stride
            y[base + x0 : base + min(x0 + 32, self.W)] = b"\xeb" * (min(x0 + 32, self.W) - x0)
        frame.planes[0].update(bytes(y))
        for p in frame.planes[1:]:
            p.update(b"\x80" * p.buffer_size)
        frame.pts = pts
        frame.time_base = time_base
        self.n += 1
        return frame


class Janus:
    """Minimal Janus HTTP API client: requests by POST, events by one long-poll loop."""

    def __init__(self, http, url):
        self.http = http
        self.url = url
        self.session = None
        self.waiters = {}  # transaction -> Future of the async event
        self.events = []  # every event seen, in order
        self.poll_task = None
        self.alive = True

    async def post(self, path, body):
        body = dict(body, transaction=body.get("transaction") or txn())
        async with self.http.post(self.url + path, json=body) as r:
            r.raise_for_status()
            resp = await r.json(content_type=None)
        return body["transaction"], resp

    async def create(self):
        _, resp = await self.post("", {"janus": "create"})
        assert resp["janus"] == "success", resp
        self.session = resp["data"]["id"]
        self.poll_task = asyncio.create_task(self.poll())
        return resp

    async def attach(self, plugin="janus.plugin.videoroom"):
        _, resp = await self.post(f"/{self.session}", {"janus": "attach", "plugin": plugin})
        assert resp["janus"] == "success", resp
        return resp["data"]["id"]

    async def message(self, handle, body, jsep=None, timeout=15):
        """Sends a plugin message; returns (sync response, async event or None)."""
        t = txn()
        fut = asyncio.get_running_loop().create_future()
        self.waiters[t] = fut
        req = {"janus": "message", "transaction": t, "body": body}
        if jsep is not None:
            req["jsep"] = jsep
        _, resp = await self.post(f"/{self.session}/{handle}", req)
        if resp["janus"] == "ack":  # asynchronous request: the result comes as an event
            ev = await asyncio.wait_for(fut, timeout)
            return resp, ev
        self.waiters.pop(t, None)
        return resp, None

    async def trickle(self, handle, candidate):
        _, resp = await self.post(
            f"/{self.session}/{handle}", {"janus": "trickle", "candidate": candidate}
        )
        return resp

    async def keepalive(self):
        _, resp = await self.post(f"/{self.session}", {"janus": "keepalive"})
        return resp

    async def poll(self):
        while self.alive:
            try:
                async with self.http.get(
                    f"{self.url}/{self.session}?maxev=10",
                    timeout=aiohttp.ClientTimeout(total=70),
                ) as r:
                    if r.status == 404:  # Janus answers a GET on a gone session with 404
                        print("long poll: 404, session gone", file=sys.stderr)
                        self.alive = False
                        return
                    data = await r.json(content_type=None)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001
                print(f"long poll error: {e!r}", file=sys.stderr)
                await asyncio.sleep(0.5)
                continue
            evs = data if isinstance(data, list) else [data]
            for ev in evs:
                if not isinstance(ev, dict):
                    continue
                self.events.append(ev)
                if ev.get("janus") == "error" and ev.get("error", {}).get("code") == 458:
                    print("session gone (458):", ev, file=sys.stderr)
                    self.alive = False
                t = ev.get("transaction")
                if t in self.waiters and ev.get("janus") == "event":
                    fut = self.waiters.pop(t)
                    if not fut.done():
                        fut.set_result(ev)

    async def wait_for(self, pred, timeout=15):
        """Waits until an event matching pred has arrived by the long poll; returns it."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for ev in self.events:
                if pred(ev):
                    return ev
            await asyncio.sleep(0.05)
        raise TimeoutError("no matching Janus event")

    async def destroy(self):
        self.alive = False
        try:
            await self.post(f"/{self.session}", {"janus": "destroy"})
        finally:
            if self.poll_task:
                self.poll_task.cancel()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def janus_threads(pid):
    names = {}
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                n = f.read().strip()
            names[n] = names.get(n, 0) + 1
    except FileNotFoundError:
        pass
    return names


async def run(args, janus_pid):
    jsep_extra = {"trickle": False} if args.trickle == "false" else {}

    def outgoing(sdp):
        """The client SDP as sent, and the candidates to trickle afterwards (trickle modes)."""
        if args.trickle not in ("trickle", "noeoc"):
            return sdp, []
        lines, cands, mline = [], [], -1
        for line in sdp.splitlines():
            if line.startswith("m="):
                mline += 1
            if line.startswith("a=candidate:") and args.trickle == "trickle":
                if mline == 0:  # BUNDLE: the first m-line's candidates serve all
                    cands.append({"sdpMid": "0", "sdpMLineIndex": 0, "candidate": line[2:]})
                continue
            if line == "a=end-of-candidates":
                continue
            lines.append(line)
        return "\r\n".join(lines) + "\r\n", cands

    async def send_trickles(handle, cands):
        if args.trickle == "trickle":
            for c in cands:
                print("trickle", json.dumps(c), "->", json.dumps(await j.trickle(handle, c)))
        if args.trickle in ("completed", "trickle"):
            print("trickle completed ->", json.dumps(await j.trickle(handle, {"completed": True})))
    sdp_dir = args.sdp_dir
    if sdp_dir:
        os.makedirs(sdp_dir, exist_ok=True)

    def save(name, sdp):
        if sdp_dir:
            with open(os.path.join(sdp_dir, name), "w") as f:
                f.write(sdp)

    async with aiohttp.ClientSession() as http:
        j = Janus(http, args.url)
        print("create ->", json.dumps(await j.create()))
        pub_h = await j.attach()
        print("attach -> handle", pub_h)

        room = random.randint(10_000, 2**31)
        resp, ev = await j.message(
            pub_h,
            {
                "request": "create",
                "room": room,
                "publishers": 100,
                "bitrate": args.room_bitrate,
                "fir_freq": 0,
                "audiocodec": "opus",
                "videocodec": "vp8",
            },
        )
        print("create room ->", json.dumps(resp))
        assert resp["plugindata"]["data"]["videoroom"] == "created", resp

        # Publisher: join (async "joined" event with our feed id), then configure with the offer.
        resp, ev = await j.message(
            pub_h, {"request": "join", "ptype": "publisher", "room": room, "display": "pub"}
        )
        print("join publisher ->", json.dumps(resp), "event:", json.dumps(ev["plugindata"]))
        feed = ev["plugindata"]["data"]["id"]

        pub = RTCPeerConnection()
        pub.addTrack(AudioStreamTrack())
        pub.addTrack(MovingBars())
        await pub.setLocalDescription(await pub.createOffer())  # gathers: candidates in SDP
        offer_sdp, pub_cands = outgoing(pub.localDescription.sdp)
        if args.browserize_publisher:
            offer_sdp = browserize(offer_sdp)
        save("publisher-offer.sdp", offer_sdp)
        resp, ev = await j.message(
            pub_h,
            {"request": "configure", "audio": True, "video": True},
            jsep=dict({"type": "offer", "sdp": offer_sdp}, **jsep_extra),
        )
        print("configure ->", json.dumps(resp), "event:", json.dumps(ev["plugindata"]))
        assert ev.get("jsep", {}).get("type") == "answer", ev
        save("janus-answer-to-publisher.sdp", ev["jsep"]["sdp"])
        for line in ev["jsep"]["sdp"].splitlines():
            if line.startswith("a=rtpmap:") and "VP8/90000" in line:
                DROP["video_pt"] = int(line[9:].split()[0])
        await send_trickles(pub_h, pub_cands)
        await pub.setRemoteDescription(RTCSessionDescription(**ev["jsep"]))
        tag(pub, "pub")
        # The feed exists for subscribers only once the publisher's PeerConnection is up
        # (before that, a subscriber join fails with error_code 428 "No such feed").
        up = await j.wait_for(lambda e: e.get("janus") == "webrtcup" and e.get("sender") == pub_h)
        print("publisher webrtcup ->", json.dumps(up))

        if args.probe_browser_sdp:
            # A second publisher handle offers a browser-like SDP (many extmaps): which
            # extensions/feedback does Janus accept? Only the SDP matters; the handle is dropped.
            probe_h = await j.attach()
            await j.message(probe_h, {"request": "join", "ptype": "publisher", "room": room})
            probe = RTCPeerConnection()
            probe.addTrack(AudioStreamTrack())
            probe.addTrack(VideoStreamTrack())
            await probe.setLocalDescription(await probe.createOffer())
            offer = browserize(probe.localDescription.sdp)
            save("browserlike-offer.sdp", offer)
            _, pev = await j.message(
                probe_h, {"request": "configure", "audio": True, "video": True},
                jsep={"type": "offer", "sdp": offer},
            )
            save("janus-answer-to-browserlike-offer.sdp", pev["jsep"]["sdp"])
            print("browser-like offer: Janus answered extmaps",
                  [l for l in pev["jsep"]["sdp"].splitlines() if l.startswith("a=extmap:")])
            await j.post(f"/{j.session}/{probe_h}", {"janus": "detach"})
            await probe.close()

        # Subscriber: new-style join with streams; Janus answers with an offer in the event.
        sub_h = await j.attach()
        resp, ev = await j.message(
            sub_h,
            {"request": "join", "ptype": "subscriber", "room": room, "streams": [{"feed": feed}]},
        )
        print("join subscriber ->", json.dumps(resp), "event:", json.dumps(ev["plugindata"]))
        assert ev.get("jsep", {}).get("type") == "offer", ev
        save("janus-offer-to-subscriber.sdp", ev["jsep"]["sdp"])

        sub = RTCPeerConnection()
        frames = {"video": 0, "audio": 0}
        first = {}
        t_start = time.monotonic()

        async def consume(track):
            while True:
                try:
                    await track.recv()
                except Exception:  # noqa: BLE001 (MediaStreamError at the end)
                    return
                frames[track.kind] += 1
                first.setdefault(track.kind, time.monotonic() - t_start)

        @sub.on("track")
        def on_track(track):
            asyncio.ensure_future(consume(track))

        await sub.setRemoteDescription(RTCSessionDescription(**ev["jsep"]))
        await sub.setLocalDescription(await sub.createAnswer())
        tag(sub, "sub")
        answer_sdp, sub_cands = outgoing(sub.localDescription.sdp)
        save("subscriber-answer.sdp", answer_sdp)
        resp, ev = await j.message(
            sub_h,
            {"request": "start"},
            jsep=dict({"type": "answer", "sdp": answer_sdp}, **jsep_extra),
        )
        print("start ->", json.dumps(resp), "event:", json.dumps(ev["plugindata"]))
        up = await j.wait_for(lambda e: e.get("janus") == "webrtcup" and e.get("sender") == sub_h)
        print("subscriber webrtcup ->", json.dumps(up))
        await send_trickles(sub_h, sub_cands)

        threads_seen = {}
        deadline = time.monotonic() + args.seconds
        next_ka = time.monotonic() + args.keepalive if args.keepalive else None
        while time.monotonic() < deadline:
            await asyncio.sleep(1)
            if janus_pid:
                for n, c in janus_threads(janus_pid).items():
                    threads_seen[n] = max(threads_seen.get(n, 0), c)
            if next_ka and time.monotonic() >= next_ka:
                await j.keepalive()
                next_ka += args.keepalive
        t_media = time.monotonic() - t_start

        def rtp(stats, typ, kind):
            """The busiest stream of that type and kind (an RTX SSRC gets a stats entry too)."""
            found = [s for s in stats.values()
                     if s.type == typ and getattr(s, "kind", None) == kind]
            key = "packetsSent" if typ == "outbound-rtp" else "packetsReceived"
            return max(found, key=lambda s: getattr(s, key), default=None)

        ps, ss = await pub.getStats(), await sub.getStats()
        out_v, in_v = rtp(ps, "outbound-rtp", "video"), rtp(ss, "inbound-rtp", "video")
        out_a, in_a = rtp(ps, "outbound-rtp", "audio"), rtp(ss, "inbound-rtp", "audio")
        print(
            f"media {t_media:.1f}s: publisher sent video {out_v.packetsSent if out_v else 0} pkts,"
            f" audio {out_a.packetsSent if out_a else 0} pkts; subscriber got video"
            f" {in_v.packetsReceived if in_v else 0} pkts, audio"
            f" {in_a.packetsReceived if in_a else 0} pkts"
        )
        print(
            f"subscriber decoded {frames['video']} video frames (first after"
            f" {first.get('video', float('nan')):.2f}s), {frames['audio']} audio frames"
        )
        if janus_pid:
            print("janus threads (max count per name):", json.dumps(threads_seen, sort_keys=True))
        other = [
            e for e in j.events
            if e.get("janus") not in ("keepalive", "ack") and e.get("transaction") is None
        ]
        print("async events without transaction:",
              json.dumps([{k: e.get(k) for k in ("janus", "sender", "type", "receiving",
                                                 "media", "uplink", "reason")}
                          for e in other]))
        print("RTCP from Janus to publisher:", json.dumps(RTCP_IN["pub"], sort_keys=True),
              f"(NACKed seqs {NACKED_SEQS['pub']}, video RTP dropped on purpose {DROP['dropped']})")
        print("RTCP from Janus to subscriber:", json.dumps(RTCP_IN["sub"], sort_keys=True))
        for st in ss.values():
            if st.type == "inbound-rtp":
                print(f"  subscriber inbound-rtp {st.kind} ssrc {st.ssrc}:"
                      f" {st.packetsReceived} pkts, lost {st.packetsLost}")
        ka = await j.keepalive()
        print("session still alive:", j.alive, "keepalive ->", json.dumps(ka))
        if ka.get("janus") != "ack":
            return False

        await j.message(sub_h, {"request": "leave"})
        await pub.close()
        await sub.close()
        await j.destroy()
        return frames["video"] >= args.seconds  # at least ~1 fps of the 30 sent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--sdp-dir")
    ap.add_argument("--keepalive", type=float, default=0)
    ap.add_argument("--trickle", choices=["sdp", "completed", "false", "noeoc", "trickle"],
                    default="sdp")
    ap.add_argument("--janus-pid", type=int)
    ap.add_argument("--room-bitrate", type=int, default=0,
                    help="room 'bitrate' (REMB cap Janus sends to publishers; 0 = none)")
    ap.add_argument("--drop-pct", type=float, default=0,
                    help="drop this %% of the publisher's VP8 RTP packets (to provoke NACKs)")
    ap.add_argument("--browserize-publisher", action="store_true",
                    help="the real publisher offers the browser-like extmaps/feedback too")
    ap.add_argument("--probe-browser-sdp", action="store_true",
                    help="also send a browser-like offer on a spare handle and save the answer")
    args = ap.parse_args()

    DROP["pct"] = args.drop_pct
    proc = None
    workdir = None
    janus_pid = args.janus_pid
    if not args.url:
        workdir = tempfile.mkdtemp(prefix="janus-smoke-")
        port = free_port()
        proc = subprocess.Popen(
            [os.path.join(HERE, "start-janus.sh"), workdir, str(port)],
            stdout=subprocess.DEVNULL,
        )
        janus_pid = proc.pid
        args.url = f"http://127.0.0.1:{port}/janus"
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        print(f"janus pid {proc.pid}, {args.url}, log {workdir}/janus.log")
    try:
        ok = asyncio.run(run(args, janus_pid))
    finally:
        if proc:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            if os.environ.get("KEEP_JANUS_DIR"):
                print("kept", workdir)
            else:
                shutil.rmtree(workdir, ignore_errors=True)
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
