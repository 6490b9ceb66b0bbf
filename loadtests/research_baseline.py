"""The research prototype's request pipeline, rebuilt as a cost baseline (comparison only).

    python loadtests/research_baseline.py --port 5000      # POST / with field `audio_file`

Not part of the service and never used by it: loadtests/benchmark.py starts it next to
`bentoml serve` and sends both the same clips. Per request it does what the thesis
describes for the prototype:

1. save the upload to a temporary file and `librosa.load(path, sr=44100)`;
2. `librosa.amplitude_to_db(abs(librosa.stft(y)))` (n_fft 2048, hop 512);
3. draw that as a spectrogram figure (`librosa.display.specshow`), save it as a PNG to a
   temporary file and read it back as a 200x200 RGB image;
4. run four Keras networks shaped like the research's (feed-forward, LeNet, max-pooling
   CNN, CNN+LSTM) on the 200x200x3 image one after another with `model.predict`.

The networks have random weights: this measures cost, not accuracy. Sizes follow the
descriptions in src/genre_detector/models/architectures.py, applied to the 200x200 image.
Matplotlib is used through its object API (one Figure per request, Agg canvas) instead
of pyplot, which is not thread-safe: the work per request is the same.
Served by Flask's threaded server in one process, as the prototype was.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SAMPLE_RATE = 44100
IMAGE_SIZE = 200
GENRES = ("classical", "electronic", "pop", "rock")
# The prototype's reply keys (the React page reads these), in the order it ran them.
MODEL_KEYS = ("Feed-Forward Model", "Le-Net Model", "CNN Model", "LSTM Model")


def build_models(n_classes: int = len(GENRES), seed: int = 0) -> dict:
    """Four small Keras models in the shape of the research's, on 200x200x3 images."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    shape = (IMAGE_SIZE, IMAGE_SIZE, 3)

    def lenet_convs(x):
        x = layers.Conv2D(16, 5, activation="relu")(x)
        x = layers.AveragePooling2D(2)(x)
        x = layers.Conv2D(32, 5, activation="relu")(x)
        return layers.AveragePooling2D(2)(x)

    def head(x, units, inputs, name):
        x = layers.Dense(units, activation="relu")(x)
        return keras.Model(inputs, layers.Dense(n_classes, activation="softmax")(x), name=name)

    models = {}
    inputs = keras.Input(shape)  # feed-forward: one conv, flatten, dense
    x = layers.Conv2D(32, 4, strides=2, activation="relu")(inputs)
    models["Feed-Forward Model"] = head(layers.Flatten()(x), 32, inputs, "feedforward")

    inputs = keras.Input(shape)  # LeNet: two conv + average-pool, dense 128
    models["Le-Net Model"] = head(layers.Flatten()(lenet_convs(inputs)), 128, inputs, "lenet")

    inputs = keras.Input(shape)  # CNN: 32 / pool / 64 / pool / 64, dense 64
    x = layers.MaxPooling2D(2)(layers.Conv2D(32, 3, activation="relu")(inputs))
    x = layers.MaxPooling2D(2)(layers.Conv2D(64, 3, activation="relu")(x))
    x = layers.Conv2D(64, 3, activation="relu")(x)
    models["CNN Model"] = head(layers.Flatten()(x), 64, inputs, "cnn")

    inputs = keras.Input(shape)  # CNN+LSTM: LeNet convs, one reshaped step
    x = layers.Reshape((1, -1))(layers.Flatten()(lenet_convs(inputs)))
    x = layers.LSTM(128)(x)
    models["LSTM Model"] = head(x, 64, inputs, "lstm")
    return models


def spectrogram_image(path: str):
    """Steps 1-3: decode at 44.1 kHz, STFT in dB, PNG figure, read back at 200x200."""
    import librosa
    import librosa.display
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from PIL import Image

    y, sr = librosa.load(path, sr=SAMPLE_RATE)
    db = librosa.amplitude_to_db(np.abs(librosa.stft(y)))
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    librosa.display.specshow(db, sr=sr, x_axis="time", y_axis="log", ax=ax)
    with tempfile.NamedTemporaryFile(prefix="research-spec-", suffix=".png") as png:
        fig.savefig(png.name, format="png")
        with Image.open(png.name) as im:
            img = im.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE))
    return np.asarray(img, dtype=np.float32)[None] / 255.0


def create_app(models: dict | None = None):
    """The Flask app: POST / (multipart field `audio_file`) and GET /healthz."""
    from flask import Flask, jsonify, request

    models = models or build_models()
    import numpy as np

    blank = np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
    for m in models.values():  # build predict functions before serving
        m.predict(blank, verbose=0)

    app = Flask("research_baseline")

    @app.get("/healthz")
    def healthz():
        return "ok"

    @app.post("/")
    def predict():
        upload = request.files.get("audio_file")
        if upload is None:
            return jsonify({"error": "missing audio_file"}), 400
        t0 = time.perf_counter()
        with tempfile.NamedTemporaryFile(
            prefix="research-upload-", suffix=os.path.splitext(upload.filename or "")[1]
        ) as f:
            upload.save(f.name)
            image = spectrogram_image(f.name)
        t1 = time.perf_counter()
        reply = {}
        for key in MODEL_KEYS:  # one after another, as the prototype did
            probs = models[key].predict(image, verbose=0)[0]
            reply[key] = {"data": {g: str(float(p)) for g, p in zip(GENRES, probs)}}
        t2 = time.perf_counter()
        reply["timing_s"] = {"preprocess": round(t1 - t0, 4), "models": round(t2 - t1, 4)}
        return jsonify(reply)

    return app


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    args = p.parse_args()
    app = create_app()
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    app.run(host=args.host, port=args.port, threaded=True)


if __name__ == "__main__":
    main()
