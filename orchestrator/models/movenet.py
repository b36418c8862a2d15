"""The built-in models' graph (TensorFlow from here): MoveNet's architecture with seeded weights,
and the lean tf.Module that serves it. Imported only inside the build child (child.py).
"""

from __future__ import annotations

# name -> (input side, MobileNetV2 alpha, neck channels); zoo.BUILTINS lists the same names.
ARCHITECTURES = {
    "movenet-thunder": (256, 1.0, 64),
    "movenet-lightning": (192, 1.0, 64),
    # Same architecture as the other two, shrunk (96x96, alpha 0.35) so tests build and run it in
    # seconds; its latencies say nothing about MoveNet's.
    "movenet-tiny": (96, 0.35, 24),
}
KEYPOINTS = 17


def keras_heads(name: str, seed: int):
    """The Keras model: float image [1,H,W,3] in 0..255 -> (heatmaps, centre, regression, offsets)."""
    import keras
    side, alpha, ch = ARCHITECTURES[name]
    keras.utils.set_random_seed(seed)
    L = keras.layers
    image = keras.Input((side, side, 3), batch_size=1, name="image")
    x = L.Rescaling(1.0 / 127.5, offset=-1.0)(image)  # MobileNetV2's [-1, 1] normalisation
    backbone = keras.applications.MobileNetV2(
        input_shape=(side, side, 3), alpha=alpha, include_top=False, weights=None)
    taps = ["block_2_add", "block_5_add", "block_12_add", "out_relu"]  # strides 4, 8, 16, 32
    features = keras.Model(backbone.input, [backbone.get_layer(t).output for t in taps])(x)
    # FPN-like neck: lateral 1x1 convs, top-down bilinear upsampling to stride 4.
    top = L.Conv2D(ch, 1, use_bias=False)(features[-1])
    for feat in reversed(features[:-1]):
        top = L.UpSampling2D(2, interpolation="bilinear")(top)
        top = L.Add()([top, L.Conv2D(ch, 1, use_bias=False)(feat)])
        top = L.SeparableConv2D(ch, 3, padding="same", activation="relu")(top)

    def head(out_ch, activation, label):
        h = L.DepthwiseConv2D(3, padding="same")(top)
        h = L.Conv2D(max(ch, 32), 1, activation="relu")(h)
        return L.Conv2D(out_ch, 1, activation=activation, name=label)(h)

    outputs = [head(KEYPOINTS, "sigmoid", "keypoint_heatmap"), head(1, "sigmoid", "centre"),
               head(2 * KEYPOINTS, None, "regression"), head(2 * KEYPOINTS, None, "offsets")]
    return keras.Model(image, outputs, name=name.replace("-", "_"))


def decode(heads):
    """MoveNet single-pose decoding: heads at stride 4 -> [1, 1, 17, 3] (y, x, score) in 0..1."""
    import tensorflow as tf
    heat, centre, regress, offsets = heads
    hf, wf = heat.shape[1], heat.shape[2]
    ys, xs = tf.meshgrid(tf.range(hf, dtype=tf.float32), tf.range(wf, dtype=tf.float32), indexing="ij")
    # The person nearest the image centre wins: centre scores weighted by inverse distance to it
    # (a constant of the grid, computed here, so the graph multiplies: no DIV, see below).
    import numpy as np
    gy, gx = np.meshgrid(np.arange(hf, dtype=np.float32), np.arange(wf, dtype=np.float32),
                         indexing="ij")
    near_mid = tf.constant(1.0 / (np.sqrt((gy - (hf - 1) / 2.0) ** 2 +
                                          (gx - (wf - 1) / 2.0) ** 2) + 1.0), tf.float32)
    centre_idx = tf.argmax(tf.reshape(centre[0, :, :, 0] * near_mid, [-1]), output_type=tf.int32)
    cy = tf.cast(centre_idx // wf, tf.float32)
    cx = tf.cast(centre_idx % wf, tf.float32)
    reg = tf.reshape(tf.gather(tf.reshape(regress, [hf * wf, 2 * KEYPOINTS]), centre_idx),
                     [KEYPOINTS, 2])
    ry, rx = cy + reg[:, 0], cx + reg[:, 1]
    # Each keypoint: its heatmap, less a penalty that grows with the squared distance to the
    # regressed position. Not the original's heat / (distance + 1.8): an int8 model converted by
    # TensorFlow 2.15 and later quantizes SQRT as builtin version 2 and DIV as int8, neither of
    # which tflite-runtime 2.14 (what a Raspberry Pi user installs: the last release on PyPI)
    # can run. Subtraction and squares it runs; the nearest strong peak still wins.
    dist2 = tf.square(ys[:, :, None] - ry) + tf.square(xs[:, :, None] - rx)
    heat_flat = tf.reshape(heat[0], [hf * wf, KEYPOINTS])
    kp_idx = tf.argmax(tf.reshape(heat[0] - dist2 * (1.0 / (4.0 * hf * wf)), [hf * wf, KEYPOINTS]),
                       axis=0, output_type=tf.int32)
    pick = tf.stack([kp_idx, tf.range(KEYPOINTS)], axis=1)
    score = tf.gather_nd(heat_flat, pick)
    off = tf.gather_nd(tf.reshape(offsets[0], [hf * wf, KEYPOINTS, 2]), pick)
    y = (tf.cast(kp_idx // wf, tf.float32) + off[:, 0]) / float(hf)
    x = (tf.cast(kp_idx % wf, tf.float32) + off[:, 1]) / float(wf)
    keypoints = tf.stack([tf.clip_by_value(y, 0.0, 1.0), tf.clip_by_value(x, 0.0, 1.0), score], axis=1)
    return tf.reshape(keypoints, [1, 1, KEYPOINTS, 3])


class ServingGraph:
    """A built-in model ready to save and convert.

    module: a tf.Module tracking the model's variables only, never the Keras model itself:
    saving a module that tracks the model also saves its object graph and every traced Keras
    call function, about 5x slower (28 s vs 6 s for movenet-tiny) for nothing a serving
    signature uses. Converters get it too: concrete functions hold variables only weakly.
    serve (int32 image) and serve_float (float32 image): tf.functions reaching the model by
    closure, kept off the module: a save retraces every function on the module it saves (its
    save context is part of the trace cache key), and a trace of the model costs seconds.
    """

    def __init__(self, name: str, seed: int):
        import tensorflow as tf
        side = ARCHITECTURES[name][0]
        net = keras_heads(name, seed)
        self.module = tf.Module()
        # Keras 3 variables are tracked through their backing tf.Variables.
        self.module.weights = [v.value for v in net.weights]

        @tf.function(input_signature=[tf.TensorSpec([1, side, side, 3], tf.int32, name="input")])
        def serve(input):  # noqa: A002 - MoveNet's SavedModel names its input "input"
            return {"output_0": decode(net(tf.cast(input, tf.float32), training=False))}

        @tf.function(input_signature=[tf.TensorSpec([1, side, side, 3], tf.float32, name="input")])
        def serve_float(input):  # noqa: A002
            return {"output_0": decode(net(input, training=False))}

        self.serve, self.serve_float = serve, serve_float
