"""rcn.httpjson.request_json: every answer that is not a JSON object is a RequestError."""

from __future__ import annotations

import io
import urllib.error
import urllib.request

from twisted.trial.unittest import SynchronousTestCase

from rcn import httpjson
from rcn.httpjson import RequestError, request_json


class _Answer(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RequestJsonTests(SynchronousTestCase):

    def answer(self, body: bytes, status: int = 200):
        def urlopen(request, timeout):
            if status == 200:
                return _Answer(body)
            raise urllib.error.HTTPError(request.full_url, status, "Bad", {}, io.BytesIO(body))
        self.patch(httpjson.urllib.request, "urlopen", urlopen)

    def test_a_json_object_is_returned(self):
        self.answer(b'{"a": 1}')
        self.assertEqual(request_json("http://h/x", 1), {"a": 1})

    def test_html_or_a_list_is_a_request_error_not_a_traceback(self):
        for body in (b"<html>hello</html>", b"[1, 2]", b"[" * 100000):
            self.answer(body)
            exc = self.assertRaises(RequestError, request_json, "http://h/x", 1)
            self.assertEqual(exc.status, 1)
            self.assertIn("GET http://h/x: the answer is not a JSON object", str(exc))

    def test_an_error_answer_gives_its_message_or_the_reason(self):
        self.answer(b'{"error": "no such pair"}', 404)
        self.assertIn("no such pair (HTTP 404", str(self.assertRaises(
            RequestError, request_json, "http://h/x", 1)))
        self.answer(b"[1]", 500)
        self.assertIn("Bad (HTTP 500", str(self.assertRaises(
            RequestError, request_json, "http://h/x", 1)))
