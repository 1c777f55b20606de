"""Secrets never reach logs: registered secrets, and values of settings whose key names a secret (every form the
Airflow Spark provider 6.3.4 masks, the forms it leaks, and in linear time)."""

from __future__ import annotations

import time

import pytest

from sparkflow.logs import SecretsMasker, mask_sensitive_settings

PROVIDER_CASES = [  # the provider's own test table (hooks/test_spark_submit.py::test_masks_passwords)
    ("spark-submit foo --bar baz --password='secret' --foo bar",
     "spark-submit foo --bar baz --password='******' --foo bar"),
    ("spark-submit foo --bar baz --password='secret'", "spark-submit foo --bar baz --password='******'"),
    ('spark-submit foo --bar baz --password="secret"', 'spark-submit foo --bar baz --password="******"'),
    ("spark-submit foo --bar baz --password=secret", "spark-submit foo --bar baz --password=******"),
    ("spark-submit foo --bar baz --password 'secret'", "spark-submit foo --bar baz --password '******'"),
    ("spark-submit foo --bar baz --password='sec\"ret'", "spark-submit foo --bar baz --password='******'"),
    ('spark-submit foo --bar baz --password="sec\'ret"', 'spark-submit foo --bar baz --password="******"'),
    ("spark-submit", "spark-submit"),
    ("spark-submit foo --secret topsecret --bar", "spark-submit foo --secret ****** --bar"),
    ("spark-submit --conf spark.mySecret=abc", "spark-submit --conf spark.mySecret=******"),
    ("spark-submit --PASSWORD=abc", "spark-submit --PASSWORD=******"),
    ("spark-submit --conf HivePassword='multi word pass' --after", "spark-submit --conf HivePassword='******' --after"),
    ("spark-submit --password 'multi word pass' --bar baz", "spark-submit --password '******' --bar baz"),
    ("spark-submit --password", "spark-submit --password"),
    ("spark-submit --password  hunter2", "spark-submit --password  ******"),
    ("Using  password  hunter2", "Using  password  ******"),
    ("spark-submit --password\thunter2", "spark-submit --password\t******"),
    ("spark-submit\t--conf\tHivePassword='abc'", "spark-submit\t--conf\tHivePassword='******'"),
    ('Config(secret="x",password=hunter2)', 'Config(secret="******",password=******'),
    ("--conf spark.a.secret='x',spark.b.password=hunter2", "--conf spark.a.secret='******',spark.b.password=******"),
    ('Config(password="my pass word", user=x)', 'Config(password="******", user=x)'),
    ("{'password': 'a b'}", "{'password': '******'}"),  # leaked 'b' before
    ("spark-submit --password='Pa'$$w0rd' --next", "spark-submit --password='******' --next"),  # leaked $$w0rd
    ('spark-submit --conf password="abc\nERROR: job failed\n--other=1 "tail',
     'spark-submit --conf password=******\nERROR: job failed\n--other=1 "tail'),
]

SPARKFLOW_CASES = [
    ("--conf spark.hadoop.fs.s3a.secret.key=abc123 --name x", "--conf spark.hadoop.fs.s3a.secret.key=****** --name x"),
    ("--conf spark.hadoop.fs.s3a.access.key=AKIA999 app.py", "--conf spark.hadoop.fs.s3a.access.key=****** app.py"),
    ("--password hunter2 --user bob", "--password ****** --user bob"),
    ("--conf 'spark.db.password=p w d' x", "--conf 'spark.db.password=******' x"),
    ('spark.api.token="a b c" next', 'spark.api.token="******" next'),
    ("--credential 'two words' tail", "--credential '******' tail"),
    ("(spark.hadoop.fs.s3a.secret.key,XYZ123)", "(spark.hadoop.fs.s3a.secret.key,******)"),
    ('{"password": "a b c"}', '{"password": "******"}'),
    ("--password='never closed and more words", "--password=******"),  # unterminated: the rest of the line
    ("--password='open\nnext line", "--password=******\nnext line"),
    ("Parsed arguments: master local[*], name count", "Parsed arguments: master local[*], name count"),
    ("tokens processed: 5", "tokens processed: 5"),  # prose with a word other than secret/password stays
]


@pytest.mark.parametrize(("text", "expected"), PROVIDER_CASES + SPARKFLOW_CASES)
def test_mask_sensitive_settings(text: str, expected: str) -> None:
    assert mask_sensitive_settings(text) == expected


@pytest.mark.parametrize(
    "line",
    [
        "password=x " * 10_000,
        "secret" * 17_000,
        "a=" + "secret" * 17_000,
        "password='x'," * 8_000,
        'password="a"b ' * 8_000,
        "--token " * 12_500,
        "'password=" * 10_000,
        "(secret.key," * 8_500,
        "x " * 50_000,
        "password " * 11_200,
        "token " * 17_000,
        ("secret" * 50 + " ") * 333,
    ],
    ids=["pairs", "keywords", "equals-keywords", "closed-quotes", "quote-glued", "flags", "enclosed", "commas",
         "plain", "bare-keys", "bare-words", "long-keys"],
)
def test_masking_is_linear_on_a_100kb_adversarial_line(line: str) -> None:
    """CPU time of this thread, not wall time: other processes on a loaded machine do not count."""
    assert len(line) >= 100_000
    started = time.thread_time()
    mask_sensitive_settings(line)
    assert time.thread_time() - started < 0.1


def test_secrets_masker_masks_longest_first_and_ignores_short_values() -> None:
    masker = SecretsMasker()
    masker.add("pass", "password123", "", None, "ab")
    assert masker.mask("password123 and pass and ab") == "*** and *** and ab"
