"""Settings reject values the pipeline cannot use, naming the variable that set them."""

import pytest

from orderwatch.config import ConfigError, PipelineSettings, Settings, Thresholds

REFUSED = [
    ({"ORDERWATCH_PIPELINE_SOURCE_BATCH_SIZE": "0"}, "ORDERWATCH_PIPELINE_SOURCE_BATCH_SIZE"),
    ({"ORDERWATCH_PIPELINE_ORDER_SHARDS": "-2"}, "ORDERWATCH_PIPELINE_ORDER_SHARDS"),
    ({"ORDERWATCH_PIPELINE_ALLOWED_LATENESS_S": "-1"}, "ORDERWATCH_PIPELINE_ALLOWED_LATENESS_S"),
    ({"ORDERWATCH_THRESHOLD_CALLBACK_LOST_AFTER_S": "nan"},
     "ORDERWATCH_THRESHOLD_CALLBACK_LOST_AFTER_S"),
    ({"ORDERWATCH_THRESHOLD_STUCK_REVIEW_S": "inf"}, "ORDERWATCH_THRESHOLD_STUCK_REVIEW_S"),
    ({"ORDERWATCH_THRESHOLD_STUCK_REVIEW_S": "0"}, "ORDERWATCH_THRESHOLD_STUCK_REVIEW_S"),
    ({"ORDERWATCH_THRESHOLD_BACKLOG_RATIO": "1.5"}, "ORDERWATCH_THRESHOLD_BACKLOG_RATIO"),
    ({"ORDERWATCH_THRESHOLD_RISK_HIGH": "101"}, "ORDERWATCH_THRESHOLD_RISK_HIGH"),
    ({"ORDERWATCH_THRESHOLD_RISK_REVIEW": "70"}, "ORDERWATCH_THRESHOLD_RISK_REVIEW"),
    ({"ORDERWATCH_THRESHOLD_DUPLICATE_SHIP_MIN_REQUESTS": "1"},
     "ORDERWATCH_THRESHOLD_DUPLICATE_SHIP_MIN_REQUESTS"),
    ({"ORDERWATCH_THRESHOLD_BACKLOG_AGE_S": "90000"}, "ORDERWATCH_THRESHOLD_BACKLOG_HORIZON_S"),
    ({"ORDERWATCH_THRESHOLD_SILENT_FAST_CARRIERS": "SF,DHL"}, "DHL"),
    ({"ORDERWATCH_METRICS_PORT": "70000"}, "ORDERWATCH_METRICS_PORT"),
    ({"ORDERWATCH_LANGUAGE": "fr"}, "ORDERWATCH_LANGUAGE"),
    ({"ORDERWATCH_DISPLAY_TIMEZONE": "Mars/Base"}, "ORDERWATCH_DISPLAY_TIMEZONE"),
    # a misspelt name used to leave the default in place without a word
    ({"ORDERWATCH_THRESHOLD_CALLBACK_LOST_AFTR_S": "300"},
     "ORDERWATCH_THRESHOLD_CALLBACK_LOST_AFTR_S is not a setting; did you mean "
     "ORDERWATCH_THRESHOLD_CALLBACK_LOST_AFTER_S"),
    ({"ORDERWATCH_PIPELINE_LATENESS": "60"}, "ORDERWATCH_PIPELINE_LATENESS is not a setting"),
]


@pytest.mark.parametrize(("env", "named"), REFUSED)
def test_an_unusable_setting_is_refused_by_name(env, named):
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(env)


def test_the_edges_of_each_range_are_accepted():
    settings = Settings.from_env({
        "ORDERWATCH_PIPELINE_ALLOWED_LATENESS_S": "0",  # 0 means "apply on arrival"
        "ORDERWATCH_THRESHOLD_CALLBACK_FAILURE_RATIO": "0",
        "ORDERWATCH_THRESHOLD_LOCK_FAILURE_RATIO": "1",
        "ORDERWATCH_THRESHOLD_RISK_REVIEW": "60", "ORDERWATCH_THRESHOLD_RISK_HIGH": "60",
        "ORDERWATCH_PIPELINE_SOURCE_BATCH_SIZE": "1", "ORDERWATCH_METRICS_PORT": "65535",
        "ORDERWATCH_DISPLAY_TIMEZONE": "UTC", "ORDERWATCH_LANGUAGE": "en",
    })
    assert settings.pipeline.allowed_lateness_s == 0
    for name in ("utc", "Z"):  # as the times shown take them (timestamps.zone)
        assert Settings.from_env({"ORDERWATCH_DISPLAY_TIMEZONE": name}).display_timezone == name
    assert settings.thresholds.risk_review == settings.thresholds.risk_high == 60
    # only the two sections' prefixes are closed: robot URL variables share ORDERWATCH_
    assert Settings.from_env({"ORDERWATCH_WECOM_OPS_URL": "https://x.test/h"}) == Settings()


def test_settings_built_in_code_are_checked_too():
    assert Settings() == Settings.from_env({})  # the defaults pass
    with pytest.raises(ConfigError, match="ORDERWATCH_PIPELINE_AGGREGATE_SHARDS"):
        PipelineSettings(aggregate_shards=0)
    with pytest.raises(ConfigError, match="must be an integer"):
        Thresholds(lock_min_count=2.5)
    with pytest.raises(ConfigError, match="must be a number"):
        Thresholds(lock_wait_p95_ms=True)
