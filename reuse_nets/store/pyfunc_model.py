"""The MLflow pyfunc of a logged reuse-nets model (MLflow "models from code").

MLflow executes this file when the model loads; the library never imports it.
The `reuse_nets` package ships inside the model (`code_paths`), so the custom
layers load in a process that has no checkout of this project, and the Keras
file loads with `safe_mode=True`: no pickles, no Lambda layers. There, the Keras
model is `mlflow.pyfunc.load_model(uri).unwrap_python_model().model`.
"""

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel

KERAS_ARTIFACT = "keras_model"  # key of the `.keras` file in the model's artifacts


class KerasClassifier(PythonModel):
    """Class probabilities of a Keras classifier, for a batch of inputs."""

    # The logged tensor signature is the contract, not type hints on `predict`
    # (MLflow would otherwise warn on every definition of this class).
    _skip_type_hint_validation = True

    def load_context(self, context):
        import keras

        import reuse_nets.nn.layers  # noqa: F401  (registers the custom layers)

        self.model = keras.saving.load_model(context.artifacts[KERAS_ARTIFACT], safe_mode=True)

    def predict(self, context, model_input, params=None):
        return np.asarray(self.model(np.asarray(model_input, dtype="float32"), training=False))


mlflow.models.set_model(KerasClassifier())
