from __future__ import annotations

from typing import Any

from sparkflow.definitions.baseoperator import BaseOperator
from sparkflow.definitions.context import Context


class EmptyOperator(BaseOperator):
    """Does nothing; groups or joins branches."""

    ui_color = "#e8f7e4"

    def execute(self, context: Context) -> Any:
        return None
