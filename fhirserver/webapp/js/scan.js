// Reading a health card's QR code with jsQR (npm jsqr, loaded as vendor/jsQR.js):
// from an uploaded photo, or from the camera where the browser has one.

function decode(imageData) {
  const found = window.jsQR(imageData.data, imageData.width, imageData.height,
                            { inversionAttempts: "attemptBoth" });
  return found ? found.data : null;
}

function pixels(source, width, height) {
  // Large photos are scaled down: jsQR finds a code faster, and as well, at ~1000 px.
  const scale = Math.min(1, 1200 / Math.max(width, height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(width * scale));
  canvas.height = Math.max(1, Math.round(height * scale));
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.drawImage(source, 0, 0, canvas.width, canvas.height);
  return ctx.getImageData(0, 0, canvas.width, canvas.height);
}

/** The QR code's text in an image file, or null. */
export async function fromFile(file) {
  const bitmap = await createImageBitmap(file);
  try {
    return decode(pixels(bitmap, bitmap.width, bitmap.height));
  } finally {
    bitmap.close();
  }
}

export function cameraAvailable() {
  return Boolean(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
}

/** Scan from the camera into ``video`` until a code is found (resolves with it),
 * ``stop()`` is called (resolves with null) or the camera fails (``onError`` is
 * told why, then null). */
export function fromCamera(video, onError = () => {}) {
  let stream = null;
  let stopped = false;
  let found = null;
  let finish;
  const done = new Promise((resolve) => { finish = resolve; });
  const stop = () => {
    stopped = true;
    if (stream) stream.getTracks().forEach((track) => track.stop());
    video.srcObject = null;
    finish(found);
  };
  navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false })
    .then((s) => {
      stream = s;
      if (stopped) { stop(); return; }
      video.srcObject = s;
      return video.play().then(() => {
        const tick = () => {
          if (stopped) return;
          if (video.readyState >= 2 && video.videoWidth) {
            const text = decode(pixels(video, video.videoWidth, video.videoHeight));
            if (text) { found = text; stop(); return; }
          }
          requestAnimationFrame(tick);
        };
        requestAnimationFrame(tick);
      });
    })
    .catch((error) => {
      onError(error);
      stop();
    });
  return { done, stop };
}
