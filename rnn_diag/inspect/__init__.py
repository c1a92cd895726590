"""``rnn-diag inspect``: the recurrent weights of a saved checkpoint, without the user's code."""
