"""Names of the four model families (no Keras import: the front service uses these)."""

MODEL_NAMES = ("feedforward", "lenet", "cnn", "lstm")
DISPLAY_NAMES = {"feedforward": "Feed-Forward", "lenet": "LeNet", "cnn": "CNN", "lstm": "CNN+LSTM"}
# The research prototype's keys, as its React page expects them.
LEGACY_NAMES = {"cnn": "CNN Model", "lenet": "Le-Net Model", "lstm": "LSTM Model",
                "feedforward": "Feed-Forward Model"}
