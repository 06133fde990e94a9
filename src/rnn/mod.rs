//! Recurrent layers: RNN (tanh, ReLU), LSTM and GRU cells and layers with BPTT.
