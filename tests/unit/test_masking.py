"""Secrets never reach logs: registered secrets, and values of settings whose key names a secret."""

from __future__ import annotations

import pytest

from sparkflow.logs import SecretsMasker, mask_sensitive_settings


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("--conf spark.hadoop.fs.s3a.secret.key=abc123 --name x",
         "--conf spark.hadoop.fs.s3a.secret.key=****** --name x"),
        ("--conf spark.hadoop.fs.s3a.access.key=AKIA999 app.py", "--conf spark.hadoop.fs.s3a.access.key=****** app.py"),
        ("--password hunter2 --user bob", "--password ****** --user bob"),
        ("--conf 'spark.db.password=p w d' x", "--conf 'spark.db.password=******' x"),
        ('spark.api.token="a b c" next', 'spark.api.token="******" next'),
        ("--credential 'two words' tail", "--credential '******' tail"),
        ("(spark.hadoop.fs.s3a.secret.key,XYZ123)", "(spark.hadoop.fs.s3a.secret.key,******)"),
        ("Parsed arguments: master local[*], name count", "Parsed arguments: master local[*], name count"),
        ("tokens processed: 5", "tokens processed: 5"),  # prose with the word is left alone
    ],
)
def test_mask_sensitive_settings(text: str, expected: str) -> None:
    assert mask_sensitive_settings(text) == expected


def test_secrets_masker_masks_longest_first_and_ignores_short_values() -> None:
    masker = SecretsMasker()
    masker.add("pass", "password123", "", None, "ab")
    assert masker.mask("password123 and pass and ab") == "*** and *** and ab"
