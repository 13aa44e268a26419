"""An independent WebRTC implementation as a call participant: aiortc joins a call as the
visitor through the documented signaling protocol (docs/protocol.md), publishes a generated
video and audio track through the SFU, and reports what it received back.

    python aiortc_visitor.py '{"base_url": "http://127.0.0.1:8080", "widget_key": "wk_...", "seconds": 8}'

With "srtp": "aes_cm" it offers only SRTP_AES128_CM_SHA1_80 in its DTLS handshake, as a client
without the AEAD profiles would, so the SFU must protect what it forwards to it with AES-CM and
HMAC-SHA1 (RFC 3711), which aiortc checks with libsrtp.

Prints JSON lines: {"phase": "..."} as it goes, and a final {"ok": ..., "frames_sent": ...,
"frames_received": ...}. Exits 1 on failure.
"""

import asyncio
import fractions
import json
import sys
import time

import numpy
from aiortc import RTCPeerConnection, RTCSessionDescription, MediaStreamTrack
from aiortc import rtcdtlstransport
from av import AudioFrame, VideoFrame
import websockets


def out(**kw):
    print(json.dumps(kw), flush=True)


class MovingPattern(MediaStreamTrack):
    """640x360 at 30 fps: a bar that moves, so every frame differs."""

    kind = "video"

    def __init__(self):
        super().__init__()
        self.n = 0
        self.start = None

    async def recv(self):
        if self.start is None:
            self.start = time.time()
        target = self.start + self.n / 30
        delay = target - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        img = numpy.zeros((360, 640, 3), numpy.uint8)
        x = (self.n * 8) % 640
        img[:, x : x + 40] = (0, 200, 255)
        frame = VideoFrame.from_ndarray(img, format="bgr24")
        frame.pts = self.n * 3000
        frame.time_base = fractions.Fraction(1, 90000)
        self.n += 1
        return frame


class Tone(MediaStreamTrack):
    """A 440 Hz tone, 20 ms frames at 48 kHz."""

    kind = "audio"

    def __init__(self):
        super().__init__()
        self.n = 0
        self.start = None

    async def recv(self):
        if self.start is None:
            self.start = time.time()
        target = self.start + self.n * 0.02
        delay = target - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        t = (numpy.arange(960) + self.n * 960) / 48000
        samples = (numpy.sin(2 * numpy.pi * 440 * t) * 8000).astype(numpy.int16)
        frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 48000
        frame.pts = self.n * 960
        frame.time_base = fractions.Fraction(1, 48000)
        self.n += 1
        return frame


async def main(cfg):
    ws_url = cfg["base_url"].replace("http", "ws", 1).rstrip("/") + "/v1/signal"
    seconds = float(cfg.get("seconds", 8))
    async with websockets.connect(ws_url, max_size=2**20) as ws:
        next_id = 0
        inbox = asyncio.Queue()

        async def reader():
            async for raw in ws:
                await inbox.put(json.loads(raw))

        reader_task = asyncio.create_task(reader())

        async def request(msg):
            nonlocal next_id
            next_id += 1
            msg["id"] = next_id
            await ws.send(json.dumps(msg))
            return next_id

        async def wait_for(kind, timeout=30):
            deadline = time.time() + timeout
            while True:
                left = deadline - time.time()
                if left <= 0:
                    raise TimeoutError(f"no {kind}")
                m = await asyncio.wait_for(inbox.get(), left)
                if m.get("type") == "error":
                    raise RuntimeError(f"server error: {m}")
                if m.get("type") == kind:
                    return m

        await wait_for("hello")
        await request({"type": "auth", "widget_key": cfg["widget_key"],
                       "page_url": cfg.get("page_url", cfg["base_url"] + "/demo")})
        await wait_for("welcome")
        await request({"type": "request_call"})
        out(phase="requested")
        connected = await wait_for("call_connected", timeout=60)
        call_id = connected["call_id"]
        media_config = await wait_for("media_config")
        out(phase="connected", call_id=call_id)

        if cfg.get("srtp") == "aes_cm":
            # Each transport takes the module's list when it is made.
            rtcdtlstransport.SRTP_PROFILES[:] = [rtcdtlstransport.SRTP_AES128_CM_SHA1_80]
        pc = RTCPeerConnection()
        video, audio = MovingPattern(), Tone()
        pc.addTransceiver(audio, direction="sendrecv")
        pc.addTransceiver(video, direction="sendrecv")
        received = {"video": 0, "audio": 0}

        @pc.on("track")
        def on_track(track):
            async def drain():
                while True:
                    try:
                        await track.recv()
                    except Exception:
                        return
                    received[track.kind] += 1

            asyncio.ensure_future(drain())

        await pc.setLocalDescription(await pc.createOffer())
        # aiortc gathers before it returns: the offer carries its candidates (no trickle).
        await request({"type": "media_offer", "call_id": call_id, "sdp": pc.localDescription.sdp})
        answer = await wait_for("media_answer")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type="answer"))
        t0 = time.time()
        while pc.connectionState != "connected":
            if time.time() - t0 > 15:
                raise TimeoutError(f"peer connection {pc.connectionState}")
            await asyncio.sleep(0.1)
        dtls = pc.getTransceivers()[0].sender.transport
        srtp = dtls._ssl.get_selected_srtp_profile().decode()
        out(phase="flowing", srtp=srtp)
        await asyncio.sleep(seconds)
        frames_sent = video.n
        await request({"type": "end_call", "call_id": call_id})
        await pc.close()
        reader_task.cancel()
        _ = media_config
        ok = frames_sent > 30 * seconds * 0.5
        out(ok=ok, srtp=srtp, frames_sent=frames_sent, audio_frames_sent=audio.n,
            video_frames_received=received["video"], audio_frames_received=received["audio"])
        return ok


if __name__ == "__main__":
    cfg = json.loads(sys.argv[1])
    try:
        ok = asyncio.run(main(cfg))
    except Exception as e:  # reported, not raised: the caller reads the JSON lines
        out(ok=False, error=f"{type(e).__name__}: {e}")
        ok = False
    sys.exit(0 if ok else 1)
