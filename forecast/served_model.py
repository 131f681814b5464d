"""MLflow "models from code" entry: loading a logged forecast model runs this file."""

import mlflow

from forecast.serving import ForecastPyfunc

mlflow.models.set_model(ForecastPyfunc())
