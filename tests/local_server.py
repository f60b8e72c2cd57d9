"""A real HTTP file server on 127.0.0.1 for download tests (no test touches the internet)."""

from __future__ import annotations

import http.server
import threading


class FileServer:
    """Serves ``files`` (name -> bytes); honours ``Range: bytes=N-`` unless ``honour_range`` is off;
    ``drop_after[name] = n`` makes the next request for ``name`` announce the whole length, send ``n`` bytes
    and close the connection (a transfer cut short)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.honour_range = True
        self.drop_after: dict[str, int] = {}
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                name, ranged = self.path.lstrip("/"), self.headers.get("Range")
                server.requests.append((name, ranged))
                if name not in server.files:
                    self.send_error(404)
                    return
                body, start = server.files[name], 0
                if ranged and server.honour_range:
                    start = int(ranged.removeprefix("bytes=").split("-")[0])
                    if start >= len(body):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                cut = server.drop_after.pop(name, None)
                self.wfile.write(body[start:] if cut is None else body[start : start + cut])
                self.close_connection = cut is not None

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()
        self.running = True

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def names_requested(self, name: str) -> list[str | None]:
        """The Range header of every request for ``name`` (None: a whole-file request)."""
        return [ranged for n, ranged in self.requests if n == name]

    def stop(self) -> None:
        if self.running:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join()
            self.running = False
