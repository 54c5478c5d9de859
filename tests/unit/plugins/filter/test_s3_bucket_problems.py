"""s3_bucket_problems: the S3 bucket naming rules, one sentence per broken rule."""
import pytest

from ansible_collections.llmops.onprem.plugins.filter.s3_bucket_problems import FilterModule, s3_bucket_problems


@pytest.mark.parametrize("name", ["llm-engine", "model-checkpoints", "a.b-c", "abc", "x" * 63, "1bucket2"])
def test_valid_names(name):
    assert s3_bucket_problems(name) == []


@pytest.mark.parametrize("name, problem", [
    ("ab", "must be 3 to 63 characters long (has 2)"),
    ("x" * 64, "must be 3 to 63 characters long (has 64)"),
    ("Model_Checkpoints", "may contain only lowercase letters, digits, '.' and '-'"),
    ("my bucket", "may contain only lowercase letters, digits, '.' and '-'"),
    ("-bucket", "must begin and end with a letter or digit"),
    ("bucket.", "must begin and end with a letter or digit"),
    ("my..bucket", "must not contain two adjacent periods"),
    ("192.168.10.20", "must not be formatted as an IP address"),
    ("xn--bucket", "must not start with the reserved prefix 'xn--'"),
    ("sthree-data", "must not start with the reserved prefix 'sthree-'"),
    ("data-s3alias", "must not end with the reserved suffix '-s3alias'"),
    ("data--ol-s3", "must not end with the reserved suffix '--ol-s3'"),
])
def test_each_rule_is_named(name, problem):
    assert problem in s3_bucket_problems(name)


def test_the_variable_and_the_name_lead_each_sentence():
    assert s3_bucket_problems("Bad_Name", "minio_checkpoints_bucket") == [
        "minio_checkpoints_bucket ('Bad_Name') may contain only lowercase letters, digits, '.' and '-'"]


def test_empty_and_none():
    assert s3_bucket_problems("") == ["must be 3 to 63 characters long (has 0)"]
    assert s3_bucket_problems(None)[0] == "must be 3 to 63 characters long (has 0)"


def test_registered():
    assert FilterModule().filters()["s3_bucket_problems"] is s3_bucket_problems
