// Runs an ONNX model with onnxruntime-node on a batch and writes the logits.
//
//   NODE_PATH=.../node_modules node ort_run.js MODEL.onnx INPUT.f32 N H W OUT.f32
//
// INPUT.f32 holds N x 3 x H x W little-endian float32 values (the input
// named "input"); OUT.f32 receives the output named "logits" the same way.
const fs = require("fs");
const ort = require("onnxruntime-node");

async function main() {
  const [model, inPath, n, h, w, outPath] = process.argv.slice(2);
  const raw = fs.readFileSync(inPath);
  const x = new Float32Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length));
  const session = await ort.InferenceSession.create(model, { executionProviders: ["cpu"] });
  const feeds = { input: new ort.Tensor("float32", x, [Number(n), 3, Number(h), Number(w)]) };
  const res = await session.run(feeds);
  const y = res.logits;
  fs.writeFileSync(outPath, Buffer.from(y.data.buffer, y.data.byteOffset, y.data.byteLength));
  console.log(`onnxruntime-node ${require("onnxruntime-node/package.json").version}: ${model.split("/").pop()} logits [${y.dims}]`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
