"""SparkSubmitOperator with the Airflow provider 6.3.4 constructor (same names and defaults), validated at load time.

The options come from one definition (sparkflow.spark.spec.SparkSubmitSpec); running, following, killing and
reattaching are sparkflow.spark.submission.SparkSubmission's. The operator only holds the (templated) values.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from sparkflow.definitions.baseoperator import BaseOperator
from sparkflow.definitions.context import Context, lookup_connection
from sparkflow.exceptions import SparkflowWarning, UserError
from sparkflow.spark.spec import SPEC_FIELDS, SparkSubmitSpec, spec_default, spec_parameters
from sparkflow.spark.submission import SparkSubmission

# Every spec option but `application`, which the operator takes first, as the provider's does.
OPERATOR_OPTIONS: tuple[str, ...] = tuple(n for n in SPEC_FIELDS if n != "application")
OPERATOR_DEFAULTS: dict[str, Any] = {"name": "arrow-spark"}  # where the operator's default is not the hook's
# Provider arguments with no counterpart in a spec: accepted with the provider's defaults.
EXTRA_ARGUMENTS: dict[str, Any] = {
    "openlineage_inject_parent_job_info": False,
    "openlineage_inject_transport_info": False,
    "reconnect_on_retry": None,
    "durable": None,
}
# Values that may be a template rendering to a dict or list at run time ("{{ var.json.spark_conf }}").
_STRUCTURED = ("conf", "application_args", "env_vars", "post_submit_commands")


class DeprecatedArgumentWarning(SparkflowWarning):
    """A DAG file passed an argument the provider deprecated; it still works."""


def is_template(value: Any) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def operator_signature(
    leading: list[inspect.Parameter], options: Sequence[str], overrides: Mapping[str, Any], extra: Mapping[str, Any]
) -> inspect.Signature:
    """The constructor signature a reader (and default_args) sees: keyword-only options with their defaults."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD), *leading,
              *spec_parameters(tuple(options), keyword, overrides),
              *(inspect.Parameter(n, keyword, default=d) for n, d in extra.items()),
              inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]
    return inspect.Signature(params)


class SparkSubmitOperator(BaseOperator):
    template_fields: ClassVar[Sequence[str]] = (
        "application", "conf", "files", "py_files", "jars", "driver_class_path", "packages", "exclude_packages",
        "keytab", "principal", "proxy_user", "name", "application_args", "env_vars", "post_submit_commands",
        "properties_file",
    )
    ui_color = "#ff7f50"
    # set from OPERATOR_OPTIONS in __init__; named here for the type checker
    conf: Any
    conn_id: str
    name: str
    application_args: Any
    env_vars: Any

    def __init__(self, *, application: str = "", **kwargs: Any) -> None:
        options = {name: kwargs.pop(name, OPERATOR_DEFAULTS.get(name, spec_default(name)))
                   for name in OPERATOR_OPTIONS}
        extra = {name: kwargs.pop(name, default) for name, default in EXTRA_ARGUMENTS.items()}
        super().__init__(**kwargs)
        self.application = application
        for name, value in options.items():
            setattr(self, name, value)
        durable = extra["durable"]
        if extra["reconnect_on_retry"] is not None:
            warnings.warn(DeprecatedArgumentWarning(
                f"{type(self).__name__} '{self.task_id}': reconnect_on_retry is deprecated (as in the provider); "
                "use durable"), stacklevel=3)
            durable = extra["reconnect_on_retry"] if durable is None else durable
        # sparkflow always reattaches a retry to a driver that still runs: durable=False opts out.
        self.durable = True if durable is None else bool(durable)
        self.openlineage_inject_parent_job_info = bool(extra["openlineage_inject_parent_job_info"])
        self.openlineage_inject_transport_info = bool(extra["openlineage_inject_transport_info"])
        self._submission: SparkSubmission | None = None
        self._validate()

    __init__.__signature__ = operator_signature(  # type: ignore[attr-defined]
        [inspect.Parameter("application", inspect.Parameter.KEYWORD_ONLY, default="")],
        OPERATOR_OPTIONS, OPERATOR_DEFAULTS, EXTRA_ARGUMENTS,
    )

    def spec_values(self) -> dict[str, Any]:
        return {"application": self.application, **{name: getattr(self, name) for name in OPERATOR_OPTIONS}}

    def _validate(self) -> None:
        """Reject a bad task when the DAG file is loaded, not when it runs at 3 a.m.; a template is checked
        once rendered."""
        if not isinstance(self.application, str) or not self.application.strip():
            raise self._error("application must be the path of a .py, .jar or .R file to submit")
        values = {k: (None if k in _STRUCTURED and is_template(v) else v) for k, v in self.spec_values().items()}
        try:
            SparkSubmitSpec.from_values(values)
        except (UserError, TypeError) as exc:
            raise self._error(str(exc)) from None

    def spec(self) -> SparkSubmitSpec:
        """The rendered values as a spec (run time)."""
        return SparkSubmitSpec.from_values(self.spec_values())

    def execute(self, context: Context) -> Any:
        if self.openlineage_inject_parent_job_info or self.openlineage_inject_transport_info:
            self.log.info("openlineage_inject_* has no effect: sparkflow has no OpenLineage integration to inject")
        conn = lookup_connection(self.conn_id)
        self._submission = SparkSubmission(self.spec(), conn, context["ti"], self.log, durable=self.durable)
        return self._submission.run()

    def on_kill(self) -> None:
        if self._submission is not None:
            self._submission.kill()
