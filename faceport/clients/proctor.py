"""A proctoring client (seed C's Python example): sends webcam or video frames to ``/ws`` and acts on replies.

Usage::

    python -m faceport.clients.proctor --url ws://localhost:8000/ws --user alice --camera 0
    python -m faceport.clients.proctor --url ws://localhost:8000/ws --user alice --video clip.mp4 --interval 1
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np

log = logging.getLogger(__name__)

CLOSE_MEANINGS = {4000: "network error", 4001: "authentication failed", 4002: "server full", 1008: "blocked"}


def encode_frame(frame: np.ndarray, quality: int = 85) -> str:
    """Base64 JPEG of a BGR frame."""
    ok, buffer = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("could not encode the frame as JPEG")
    return base64.b64encode(buffer.tobytes()).decode("ascii")


def frames(source: str | int) -> Iterator[np.ndarray]:
    """Frames of a video file or a camera index, until the source ends."""
    capture = cv2.VideoCapture(source)
    try:
        while True:
            ok, frame = capture.read()
            if not ok:
                return
            yield frame
    finally:
        capture.release()


class FaceRecognitionClient:
    """Mirrors the seed's example: connect, send frames, handle each action."""

    def __init__(self, server_url: str, username: str, token: str | None = None) -> None:
        self.server_url = server_url
        self.username = username
        self.token = token  # the client's token from the admin API, when the server wants one
        self.replies: list[dict[str, Any]] = []

    async def run(self, source: str | int, *, interval: float = 1.0, limit: int | None = None) -> list[dict[str, Any]]:
        """Send one frame every ``interval`` seconds, wait for its answer, stop on a close or after ``limit``."""
        import websockets

        async with websockets.connect(self.server_url, max_size=None) as websocket:
            for index, frame in enumerate(frames(source)):
                if limit is not None and index >= limit:
                    break
                try:
                    message = {"user_name": self.username, "image": encode_frame(frame)}
                    if self.token:
                        message["token"] = self.token
                    await websocket.send(json.dumps(message))
                    reply = json.loads(await websocket.recv())
                except websockets.ConnectionClosed as closed:
                    code = closed.rcvd.code if closed.rcvd else 1006
                    log.warning("connection closed: %s (%s)", code, CLOSE_MEANINGS.get(code, "closed"))
                    break
                self.replies.append(reply)
                self.handle_response(reply)
                await asyncio.sleep(interval)
        return self.replies

    def handle_response(self, response: dict[str, Any]) -> None:
        action, reason = response.get("action"), response.get("reason")
        if action == "NO_ACTION":
            log.info("access granted")
        elif action == "ACTION_LOCK_SCREEN":
            log.warning("lock screen requested: %s", reason)
        elif action == "ACTION_SIGN_OUT":
            log.warning("sign out requested: %s", reason)
        elif action == "ACTION_WARNING":
            log.warning("warning: %s", reason)
        else:
            log.error("error: %s %s", reason, response.get("message", ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="faceport proctoring client")
    parser.add_argument("--url", default="ws://localhost:8000/ws")
    parser.add_argument("--user", required=True)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--video")
    group.add_argument("--camera", type=int)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between frames")
    parser.add_argument("--limit", type=int, default=None, help="stop after this many frames")
    parser.add_argument("--token", default=os.environ.get("FACEPORT_PROCTOR_TOKEN"),
                        help="the client's token (default: $FACEPORT_PROCTOR_TOKEN)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    source: str | int = args.video if args.video is not None else args.camera
    replies = asyncio.run(FaceRecognitionClient(args.url, args.user, args.token).run(source, interval=args.interval,
                                                                         limit=args.limit))
    for reply in replies:
        print(json.dumps(reply))  # the CLI's output: one JSON reply per line
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
