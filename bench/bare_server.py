"""The comparison point of bench/iti39_throughput.py: a bare FastAPI route under uvicorn returning fixed bytes.

    python bench/bare_server.py --payload FILE --content-type TYPE --port P
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Response


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--payload", type=Path, required=True)
    parser.add_argument("--content-type", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    payload = args.payload.read_bytes()
    app = FastAPI()

    @app.get("/health/live")
    async def live() -> dict[str, str]:
        return {"status": "live"}

    @app.post("/SOAP/iti39")
    async def iti39() -> Response:
        return Response(payload, media_type=args.content_type)

    uvicorn.run(app, host="127.0.0.1", port=args.port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
