"""MLflow "models from code" entry: loading a logged forecast model runs this file."""

import mlflow

from forecast.pyfunc import ForecastPyfunc

mlflow.models.set_model(ForecastPyfunc())
