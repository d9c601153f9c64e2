//! Reads the weights out of an ONNX file without an ONNX runtime.
//!
//! Only what weight loading needs is decoded: the graph's initializers
//! (float tensors) and its nodes (to give the anonymous initializers that
//! exporters create, e.g. `onnx::Conv_8168`, the parameter name of the layer
//! that uses them). The protobuf messages below are the subset of
//! `onnx.proto` (field numbers from the ONNX specification) that carries it.

use std::collections::HashMap;
use std::path::Path;

use prost::Message;

#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
}

#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorProto>,
}

#[derive(Clone, PartialEq, Message)]
struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    input: Vec<String>,
    #[prost(string, optional, tag = "3")]
    name: Option<String>,
    #[prost(string, optional, tag = "4")]
    op_type: Option<String>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    dims: Vec<i64>,
    #[prost(int32, optional, tag = "2")]
    data_type: Option<i32>,
    #[prost(float, repeated, tag = "4")]
    float_data: Vec<f32>,
    #[prost(string, optional, tag = "8")]
    name: Option<String>,
    #[prost(bytes = "vec", optional, tag = "9")]
    raw_data: Option<Vec<u8>>,
}

/// ONNX `TensorProto.DataType.FLOAT`.
const FLOAT: i32 = 1;

/// A float tensor: shape and row-major values.
#[derive(Debug, Clone)]
pub struct WeightTensor {
    pub dims: Vec<usize>,
    pub values: Vec<f32>,
}

/// Errors reading a weight file.
#[derive(Debug, thiserror::Error)]
pub enum WeightError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not an ONNX model: {source}")]
    Decode {
        path: String,
        source: prost::DecodeError,
    },
    #[error("weight {0} is missing from the model file")]
    Missing(String),
    #[error("weight {name} has shape {found:?}, expected {expected:?}")]
    Shape {
        name: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("weight {0} has an unsupported layout")]
    Layout(String),
}

/// The float initializers of an ONNX graph, by name. Layer weights whose
/// initializer has an exporter-made name are also reachable by the layer's
/// parameter name (`flow.flows.6.enc.in_layers.0.weight`), derived from the
/// name of the `Conv`/`ConvTranspose` node that consumes them.
#[derive(Debug, Default)]
pub struct OnnxWeights {
    tensors: HashMap<String, WeightTensor>,
    aliases: HashMap<String, String>,
}

impl OnnxWeights {
    pub fn read(path: &Path) -> Result<Self, WeightError> {
        let bytes = std::fs::read(path).map_err(|source| WeightError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::decode(&bytes).map_err(|source| WeightError::Decode {
            path: path.display().to_string(),
            source,
        })
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        let model = ModelProto::decode(bytes)?;
        let graph = model.graph.unwrap_or_default();
        let mut tensors = HashMap::new();
        for t in graph.initializer {
            if t.data_type.unwrap_or(0) != FLOAT {
                continue;
            }
            let values = match t.raw_data {
                Some(raw) if !raw.is_empty() => raw
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                _ => t.float_data,
            };
            let dims = t.dims.iter().map(|&d| d.max(0) as usize).collect();
            tensors.insert(t.name.unwrap_or_default(), WeightTensor { dims, values });
        }
        let mut aliases = HashMap::new();
        for node in graph.node {
            let op = node.op_type.as_deref().unwrap_or("");
            if op != "Conv" && op != "ConvTranspose" {
                continue;
            }
            let Some(layer) = node
                .name
                .as_deref()
                .and_then(|n| n.strip_suffix(&format!("/{op}")))
            else {
                continue;
            };
            let layer = layer.trim_start_matches('/').replace('/', ".");
            for (input, param) in node.input.iter().skip(1).zip(["weight", "bias"]) {
                let alias = format!("{layer}.{param}");
                if *input != alias && tensors.contains_key(input) {
                    aliases.insert(alias, input.clone());
                }
            }
        }
        Ok(Self { tensors, aliases })
    }

    /// The tensor called `name` (or aliased to it), checked against `dims`.
    pub fn get(&self, name: &str, dims: &[usize]) -> Result<&WeightTensor, WeightError> {
        let t = self
            .tensors
            .get(name)
            .or_else(|| self.aliases.get(name).and_then(|a| self.tensors.get(a)))
            .ok_or_else(|| WeightError::Missing(name.to_string()))?;
        if t.dims != dims || t.values.len() != dims.iter().product::<usize>() {
            return Err(WeightError::Shape {
                name: name.to_string(),
                found: t.dims.clone(),
                expected: dims.to_vec(),
            });
        }
        Ok(t)
    }

    /// Whether a tensor (or alias) of this name exists.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name) || self.aliases.contains_key(name)
    }
}
