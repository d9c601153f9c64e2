#!/usr/bin/env python3
"""A WHIP endpoint (RFC 9725) on aiortc, a WebRTC implementation other than
Huashen's, for the WHIP egress test: it accepts one publisher's offer,
decodes the H.264 and Opus it receives, and reports what it decoded.

    whip_receiver.py PORT TOKEN

    POST   /whip                 the publisher's SDP offer (Bearer TOKEN)
    DELETE /whip/resource/<id>   the publisher hangs up
    GET    /stats                JSON: what was received and decoded

Prints "listening" once it accepts requests.
"""

import array
import asyncio
import json
import sys
import uuid

from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription

PORT = int(sys.argv[1])
TOKEN = sys.argv[2]

stats = {
    "offers": 0,
    "refused": 0,
    "video_frames": 0,
    "audio_frames": 0,
    "width": 0,
    "height": 0,
    "loudest": 0.0,
    "deleted": 0,
    "connection": "new",
    "codecs": [],
}
peers = {}


async def consume(track):
    while True:
        try:
            frame = await track.recv()
        except Exception:
            return
        if track.kind == "video":
            stats["video_frames"] += 1
            stats["width"], stats["height"] = frame.width, frame.height
        else:
            stats["audio_frames"] += 1
            # aiortc decodes Opus to packed signed 16-bit samples.
            samples = array.array("h", bytes(frame.planes[0]))
            if samples:
                peak = max(abs(min(samples)), max(samples)) / 32768.0
                stats["loudest"] = max(stats["loudest"], peak)


async def offer(request):
    if request.headers.get("Authorization") != f"Bearer {TOKEN}":
        stats["refused"] += 1
        return web.Response(status=401, text="bad token")
    if request.content_type != "application/sdp":
        return web.Response(status=415, text="application/sdp only")
    stats["offers"] += 1
    sdp = await request.text()
    pc = RTCPeerConnection()
    rid = uuid.uuid4().hex
    peers[rid] = pc

    @pc.on("track")
    def on_track(track):
        asyncio.ensure_future(consume(track))

    @pc.on("connectionstatechange")
    async def on_state():
        stats["connection"] = pc.connectionState

    await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
    await pc.setLocalDescription(await pc.createAnswer())
    answer = pc.localDescription.sdp
    stats["codecs"] = sorted(
        {line.split(" ", 1)[1] for line in answer.splitlines() if line.startswith("a=rtpmap:")}
    )
    return web.Response(
        status=201,
        text=answer,
        content_type="application/sdp",
        headers={"Location": f"/whip/resource/{rid}"},
    )


async def delete(request):
    pc = peers.pop(request.match_info["rid"], None)
    if pc is None:
        return web.Response(status=404)
    stats["deleted"] += 1
    await pc.close()
    return web.Response(status=200)


async def get_stats(_request):
    return web.json_response(stats)


async def main():
    app = web.Application()
    app.router.add_post("/whip", offer)
    app.router.add_delete("/whip/resource/{rid}", delete)
    app.router.add_get("/stats", get_stats)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", PORT).start()
    print("listening", flush=True)
    await asyncio.Event().wait()


asyncio.run(main())
