"""The client's pure parts: PHP parameters, error bodies, Content-Disposition as Moodle sends it."""

from __future__ import annotations

from appliance.moodle.client import AuthError, MoodleError, disposition_filename, error_from, php_params


def test_php_array_parameters():
    assert php_params({"courseids": [3, 2], "tocheck": [{"id": 1, "since": 5}], "x": True}) == [
        ("courseids[0]", "3"),
        ("courseids[1]", "2"),
        ("tocheck[0][id]", "1"),
        ("tocheck[0][since]", "5"),
        ("x", "1"),
    ]


def test_moodle_errors_come_in_the_body():
    error = error_from(
        {"exception": "moodle_exception", "errorcode": "invalidtoken", "message": "Invalid token"}, "f"
    )
    assert isinstance(error, AuthError) and "renew" in str(error)
    error = error_from({"error": "Sorry", "errorcode": "filenotfound"}, "/x.pdf")
    assert isinstance(error, MoodleError) and str(error).startswith("/x.pdf: Sorry [filenotfound]")
    assert error_from({"pages": [], "warnings": []}, "f") is None
    assert error_from([{"errorcode": "x"}], "f") is None


def test_raw_utf8_file_names_are_read_as_utf8():
    header = 'inline; filename="Карта Египта.pdf"'.encode().decode("latin-1")  # as http.client hands it
    assert disposition_filename(header) == "Карта Египта.pdf"
    assert disposition_filename("attachment; filename*=UTF-8''%D0%90.pdf") == "А.pdf"
    assert disposition_filename(None) is None
