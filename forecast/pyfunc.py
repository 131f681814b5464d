"""The trained model as MLflow serves it: a frame of raw readings in, the next H steps out.

`ForecastPyfunc` wraps a `Forecaster` (forecast/forecaster.py) loaded from its bundle artifact;
`load(uri)` opens any logged or registered forecast model and hands back both.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from forecast.errors import InputError
from forecast.forecaster import Forecaster

TIME = "timestamp"


def load(model_uri: str) -> tuple[mlflow.pyfunc.PyFuncModel, Forecaster]:
    """A logged forecast model by URI (models:/forecast@champion, runs:/<id>/model, a folder) and its Forecaster.

    Raises InputError, naming the URI, when it cannot be loaded or is not a forecast model.
    """
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except (MlflowException, OSError) as e:
        first = str(e).strip().splitlines()[0][:200]
        raise InputError(f"cannot load the model {model_uri}: {first}\n"
                         "Promote one with python -m forecast.retrain, or pass model_uri=runs:/<run id>/model.") from None
    forecaster = getattr(model.unwrap_python_model(), "forecaster", None)
    if not isinstance(forecaster, Forecaster):
        raise InputError(f"{model_uri} is not a forecast model of this version of the package (retrain it)")
    return model, forecaster


class ForecastPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc: a frame of the latest raw readings -> the next H steps of every target.

    Input: at least `lookback` rows with one column per input sensor and a `timestamp` column of
    ISO strings (as read from a CSV); the last `lookback` rows are used. Output: H rows, one column
    per target in the data's units, plus `timestamp` (continuing the input's stamps at the model's
    frequency) when the input had one, else `step` (1..H).
    """

    def load_context(self, context) -> None:
        self.forecaster = Forecaster.load(context.artifacts["bundle"])

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        f = self.forecaster
        frame = pd.DataFrame(model_input)
        missing = [c for c in f.inputs if c not in frame.columns]
        if missing:
            raise InputError(f"model input lacks column(s) {', '.join(missing)}; it needs {', '.join(f.inputs)}")
        if len(frame) < f.lookback:
            raise InputError(f"model input has {len(frame)} rows; the model needs the last {f.lookback} readings")
        raw = frame[f.inputs].to_numpy(dtype=np.float64)[-f.lookback :]            # [L, C]
        if np.isnan(raw).any():
            raise InputError("model input has missing values in its last lookback rows; fill or drop them first")
        out = pd.DataFrame(f.forecast(raw[None])[0], columns=f.targets)             # [H, T]
        if TIME in frame.columns:
            last = pd.Timestamp(pd.to_datetime(frame[TIME]).iloc[-1])
            out.insert(0, TIME, pd.date_range(last, periods=f.horizon + 1, freq=f.freq)[1:])
        else:
            out.insert(0, "step", np.arange(1, f.horizon + 1))
        return out
