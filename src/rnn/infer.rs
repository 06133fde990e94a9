//! Recovering a recurrent layer's architecture from the keys and shapes of its `state_dict`.

use std::collections::BTreeSet;

use crate::io::TensorFile;
use crate::{Error, Result};

use super::{CellKind, RecurrentConfig};

/// The [`RecurrentConfig`] whose parameters a PyTorch `nn.RNN`/`nn.LSTM`/`nn.GRU` `state_dict`
/// holds, and the key prefix they share (`""` for a bare module, `"rnn."` for a submodule).
///
/// `num_layers` is one more than the largest `_l{k}`, `bidirectional` is the presence of
/// `_reverse` keys, `hidden_size` is the width of `weight_hh_l0` and `input_size` the width of
/// `weight_ih_l0`. `kind` must agree with the number of gate blocks (`weight_ih_l0` has
/// `gates·hidden_size` rows); every other key is then checked when the weights are loaded.
///
/// # Errors
/// No `weight_ih_l0` key (or several prefixes holding one), or a gate count that does not fit `kind`.
pub fn config_from_state_dict(
    file: &TensorFile,
    kind: CellKind,
) -> Result<(RecurrentConfig, String)> {
    let bad = |msg: String| Error::Checkpoint {
        path: file.source.clone(),
        msg,
    };
    let prefixes: BTreeSet<&str> = file
        .names()
        .into_iter()
        .filter_map(|n| n.strip_suffix("weight_ih_l0"))
        .collect();
    let prefix = match prefixes.len() {
        1 => prefixes.into_iter().next().expect("one").to_string(),
        0 => {
            return Err(bad(format!(
                "no recurrent layer found: expected a key weight_ih_l0 (PyTorch nn.RNN/LSTM/GRU names), found {}",
                summarise(&file.names())
            )));
        }
        _ => {
            return Err(bad(format!(
                "several recurrent layers found (prefixes {:?}); save the one to run on its own",
                prefixes
            )));
        }
    };
    if file.contains(&format!("{prefix}weight_hr_l0")) {
        return Err(bad(format!(
            "{prefix}weight_hr_l0 is an LSTM projection (proj_size > 0), which skipgate does not support"
        )));
    }
    if !file.contains(&format!("{prefix}bias_ih_l0")) {
        return Err(bad(format!(
            "{prefix}bias_ih_l0 is missing: skipgate's recurrent layers always have both biases (PyTorch's bias=True)"
        )));
    }
    let shape = |name: &str| -> Result<Vec<usize>> {
        Ok(file.get(&format!("{prefix}{name}"))?.shape().to_vec())
    };
    let w_ih = shape("weight_ih_l0")?;
    let w_hh = shape("weight_hh_l0")?;
    if w_ih.len() != 2 || w_hh.len() != 2 {
        return Err(bad(format!(
            "{prefix}weight_ih_l0 and weight_hh_l0 must be matrices, found shapes {w_ih:?} and {w_hh:?}"
        )));
    }
    let hidden = w_hh[1];
    let gates = if hidden > 0 && w_ih[0] % hidden == 0 {
        w_ih[0] / hidden
    } else {
        0
    };
    if gates != kind.gates() {
        let looks = match gates {
            1 => "an RNN (1 gate block)",
            3 => "a GRU (3 gate blocks)",
            4 => "an LSTM (4 gate blocks)",
            _ => "no known cell",
        };
        return Err(bad(format!(
            "--arch {kind} expects weight_ih_l0 with {}·hidden = {} rows, found {} rows with hidden {hidden}: this looks like {looks}",
            kind.gates(),
            kind.gates() * hidden,
            w_ih[0]
        )));
    }
    let mut layers = 0;
    let mut bidirectional = false;
    for name in file.names() {
        if let Some(rest) = name
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_prefix("weight_ih_l"))
        {
            let (num, rev) = match rest.strip_suffix("_reverse") {
                Some(n) => (n, true),
                None => (rest, false),
            };
            if let Ok(l) = num.parse::<usize>() {
                layers = layers.max(l + 1);
                bidirectional |= rev;
            }
        }
    }
    let config = RecurrentConfig::new(kind, w_ih[1], hidden)
        .layers(layers)
        .bidirectional(bidirectional);
    Ok((config, prefix))
}

fn summarise(names: &[&str]) -> String {
    if names.is_empty() {
        return "no tensors".into();
    }
    let shown: Vec<&str> = names.iter().take(8).copied().collect();
    let more = names.len().saturating_sub(8);
    if more > 0 {
        format!("{} and {more} more", shown.join(", "))
    } else {
        shown.join(", ")
    }
}
