"""``model=seq2seq``: an encoder-decoder with Luong or Bahdanau attention.

For a batch of B sources padded to S tokens and targets of T tokens (ids; 0 = padding):

Encoder (packed, so padding never enters the recurrence):

    m    = (Bi)RNN(Dropout(E_src[x]))                        B x S x H     (memory)
    s_0  = the encoder's final state per layer               L x B x H     (both directions
           side by side: each direction has H / 2 units, as OpenNMT's ``brnn``)

Decoder, ``attention_style: luong`` (Luong et al. 2015), attention after the step:

    h_t  = RNN([E_tgt[y_{t-1}]; ~h_{t-1} if input_feed], s_{t-1})
    c_t  = Attention(h_t, m, mask: real source tokens)      B x H
    ~h_t = tanh(W_c [c_t; h_t])
    p_t  = softmax(W_o Dropout(~h_t))                         B x V

``attention_style: bahdanau`` (Bahdanau et al. 2015), attention before the step, with the
previous state (top layer) as the query and the context fed in beside the input embedding:

    c_t  = Attention(s_{t-1}, m, mask)
    s_t  = RNN([E_tgt[y_{t-1}]; c_t], s_{t-1})
    ~h_t = tanh(W_c [c_t; s_t]),  p_t as above

``attention=none`` (the plain encoder-decoder, whose only view of the source is s_0):
~h_t = h_t. A query-free method (``feedforward``) pools the memory once per source and feeds
the same context to every step.

Vectorised where the maths allows: with teacher forcing, Luong attention and no input feeding
(or no attention), the decoder reads the whole target in one recurrent call and attends for
all T steps in one batched product (B x T x S). Input feeding, Bahdanau attention, scheduled
sampling (``teacher_forcing`` < 1) and decoding need the previous step's output, so they loop
over steps; every step is batched over the examples (and, in beam search, the beams).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from attnlstm.attention import Attention
from attnlstm.config import AttentionConfig, Seq2SeqConfig
from attnlstm.contracts import SpecialTokens, TaskSpec, lengths_to_mask
from attnlstm.errors import ConfigError
from attnlstm.models.registry import configured_attention, register_model

RecurrentState = Tensor | tuple[Tensor, Tensor]  # GRU: h; LSTM: (h, c), each L x B x H


@dataclass
class Seq2SeqOutput:
    """Teacher-forced logits (B, T, V) and attention weights (B, T, S) (None without
    attention; a query-free method gives the same row at every step)."""

    logits: Tensor
    attention: Tensor | None = None


@dataclass
class Memory:
    """What the decoder attends to: the encoder's ``states`` (B, S, H), ``mask`` (B, S) True at
    real source tokens, and the attention's ``key_features`` of the states (computed once per
    source rather than at every decoder step; None for methods without any)."""

    states: Tensor
    mask: Tensor
    key_features: Tensor | None = None

    def repeat_interleave(self, count: int) -> Memory:
        """Each source repeated ``count`` times in a row (the beams of beam search)."""
        features = self.key_features
        return Memory(
            self.states.repeat_interleave(count, dim=0),
            self.mask.repeat_interleave(count, dim=0),
            None if features is None else features.repeat_interleave(count, dim=0),
        )


@dataclass
class Decoded:
    """Decoded sequences: tokens (B, L) without BOS, padded with 0 after each sequence's end
    (EOS included where it was produced); lengths (B,) the tokens before EOS; attention (B, L,
    S) or None; scores (B,) the sum of the chosen tokens' log-probabilities (beam search: the
    length-normalised score that ranked the hypothesis)."""

    tokens: Tensor
    lengths: Tensor
    attention: Tensor | None
    scores: Tensor


class Encoder(nn.Module):
    """Embeddings and a packed (Bi)LSTM or GRU: (B, S) ids -> memory (B, S, H), final state."""

    def __init__(
        self,
        vocab_size: int,
        embedding_size: int,
        hidden_size: int,
        num_layers: int,
        cell: Literal["lstm", "gru"],
        bidirectional: bool,
        dropout: float,
        pad: int = 0,
    ) -> None:
        super().__init__()
        if bidirectional and hidden_size % 2:
            raise ValueError(
                f"a bidirectional encoder needs an even hidden_size, got {hidden_size}"
            )
        self.bidirectional = bidirectional
        self.num_layers = num_layers
        self.embedding = nn.Embedding(vocab_size, embedding_size, padding_idx=pad)
        self.dropout = nn.Dropout(dropout)
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(
            embedding_size,
            hidden_size // 2 if bidirectional else hidden_size,
            num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
            bidirectional=bidirectional,
        )

    def forward(self, source: Tensor, lengths: Tensor) -> tuple[Tensor, RecurrentState]:
        """source (B, S), lengths (B,) >= 1 -> memory (B, S, H) (zeros at padding), final
        state L x B x H (LSTM: a pair)."""
        embedded = self.dropout(self.embedding(source))  # B x S x E
        packed = pack_padded_sequence(
            embedded, lengths.cpu(), batch_first=True, enforce_sorted=False
        )
        packed_memory, final = self.rnn(packed)
        memory, _ = pad_packed_sequence(
            packed_memory, batch_first=True, total_length=source.size(1)
        )  # B x S x H, zeros at padding
        if isinstance(final, tuple):
            return memory, (self._join(final[0]), self._join(final[1]))
        return memory, self._join(final)

    def _join(self, state: Tensor) -> Tensor:
        """(L * dirs) x B x H/dirs -> L x B x H: each layer's directions side by side."""
        if not self.bidirectional:
            return state
        layers, batch, half = self.num_layers, state.size(1), state.size(2)
        return state.view(layers, 2, batch, half).transpose(1, 2).reshape(layers, batch, 2 * half)


class Seq2Seq(nn.Module):
    """See the module docstring for the computation and shapes."""

    def __init__(
        self,
        source_vocab_size: int,
        target_vocab_size: int,
        embedding_size: int = 256,
        hidden_size: int = 256,
        num_layers: int = 1,
        cell: Literal["lstm", "gru"] = "lstm",
        bidirectional: bool = True,
        dropout: float = 0.1,
        attention: Attention | None = None,
        attention_style: Literal["luong", "bahdanau"] = "luong",
        input_feed: bool = False,
        teacher_forcing: float = 1.0,
        special: SpecialTokens | None = None,
    ) -> None:
        """``special``: the ids of padding, BOS and EOS in both vocabularies (from the task's
        spec; default :class:`SpecialTokens`)."""
        super().__init__()
        self.special = special or SpecialTokens()
        if attention_style not in ("luong", "bahdanau"):
            raise ValueError(f"attention_style must be luong or bahdanau, got {attention_style!r}")
        if attention_style == "bahdanau" and input_feed:
            raise ValueError(
                "input feeding is Luong's: Bahdanau attention already feeds the context to"
                " the next step"
            )
        if not 0.0 <= teacher_forcing <= 1.0:
            raise ValueError(f"teacher_forcing must lie in [0, 1], got {teacher_forcing}")
        self.encoder = Encoder(
            source_vocab_size,
            embedding_size,
            hidden_size,
            num_layers,
            cell,
            bidirectional,
            dropout,
            self.special.pad,
        )
        self.cell = cell
        self.hidden_size = hidden_size
        self.attention = attention
        self.style = attention_style
        self.input_feed = input_feed and attention is not None
        self.teacher_forcing = teacher_forcing
        self.embedding = nn.Embedding(
            target_vocab_size, embedding_size, padding_idx=self.special.pad
        )
        self.dropout = nn.Dropout(dropout)
        extra_input = hidden_size if (self.input_feed or self._context_in_input) else 0
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.rnn = rnn(
            embedding_size + extra_input,
            hidden_size,
            num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.combine = (
            None if attention is None else nn.Linear(2 * hidden_size, hidden_size, bias=False)
        )
        self.output = nn.Linear(hidden_size, target_vocab_size)

    @property
    def _context_in_input(self) -> bool:
        return self.attention is not None and self.style == "bahdanau"

    @property
    def vectorised(self) -> bool:
        """Whether teacher-forced training runs the decoder in one call (no step loop)."""
        return self.attention is None or (self.style == "luong" and not self.input_feed)

    # -- pieces -----------------------------------------------------------------------------

    def encode(self, source: Tensor, lengths: Tensor) -> tuple[Memory, RecurrentState]:
        """The memory to attend to and the initial decoder state."""
        states, state = self.encoder(source, lengths)
        mask = lengths_to_mask(lengths.to(source.device), source.size(1))
        features = None if self.attention is None else self.attention.key_features(states)
        return Memory(states, mask, features), state

    def _attend(self, query: Tensor | None, memory: Memory) -> tuple[Tensor, Tensor]:
        """query (B, H) or (B, T, H) -> context and weights ((B, S) or (B, T, S))."""
        assert self.attention is not None
        states, mask = memory.states, memory.mask
        if not self.attention.uses_query:  # one context per source, shared by every step
            context, weights = self.attention(None, states, mask)  # B x H, B x S
            if query is not None and query.dim() == 3:
                steps = query.size(1)
                return (
                    context.unsqueeze(1).expand(-1, steps, -1),
                    weights.unsqueeze(1).expand(-1, steps, -1),
                )
            return context, weights
        step_mask = mask if query is not None and query.dim() == 2 else mask.unsqueeze(1)
        return self.attention(query, states, step_mask, key_features=memory.key_features)

    def _top(self, state: RecurrentState) -> Tensor:
        """The top layer's hidden state (B, H)."""
        hidden = state[0] if isinstance(state, tuple) else state
        return hidden[-1]

    def step(
        self,
        tokens: Tensor,
        state: RecurrentState,
        feed: Tensor | None,
        memory: Memory,
    ) -> tuple[Tensor, RecurrentState, Tensor | None, Tensor | None]:
        """One decoder step: previous tokens (B,) -> logits (B, V), the new state, the next
        input feed (~h_t, or None), the attention weights (B, S) or None."""
        embedded = self.dropout(self.embedding(tokens))  # B x E
        weights = None
        if self._context_in_input:  # Bahdanau: attend with s_{t-1}, then step
            context, weights = self._attend(self._top(state), memory)
            rnn_input = torch.cat([embedded, context], dim=-1)
        elif self.input_feed:
            assert feed is not None
            rnn_input = torch.cat([embedded, feed], dim=-1)
        else:
            rnn_input = embedded
        output, state = self.rnn(rnn_input.unsqueeze(1), state)
        hidden = output.squeeze(1)  # B x H
        if self.attention is None:
            features = hidden
        else:
            if not self._context_in_input:  # Luong: attend with h_t
                context, weights = self._attend(hidden, memory)
            assert self.combine is not None
            features = torch.tanh(self.combine(torch.cat([context, hidden], dim=-1)))
        logits = self.output(self.dropout(features))
        return logits, state, features if self.input_feed else None, weights

    def _initial_feed(self, memory: Memory) -> Tensor | None:
        if not self.input_feed:
            return None
        return memory.states.new_zeros(memory.states.size(0), self.hidden_size)

    # -- teacher forcing --------------------------------------------------------------------

    def forward(
        self, source: Tensor, source_lengths: Tensor, target_input: Tensor
    ) -> Seq2SeqOutput:
        """Teacher-forced scores: source (B, S), source_lengths (B,), target_input (B, T) =
        BOS followed by the target -> logits (B, T, V) for the target followed by EOS.

        In training with ``teacher_forcing`` < 1 each step feeds, per example, the gold token
        with that probability and the model's own previous prediction otherwise.
        """
        memory, state = self.encode(source, source_lengths)
        sampling = self.training and self.teacher_forcing < 1.0
        if self.vectorised and not sampling:
            return self._forward_all_at_once(target_input, state, memory)
        logits_steps, weight_steps = [], []
        feed = self._initial_feed(memory)
        tokens = target_input[:, 0]
        for t in range(target_input.size(1)):
            logits, state, feed, weights = self.step(tokens, state, feed, memory)
            logits_steps.append(logits)
            if weights is not None:
                weight_steps.append(weights)
            if t + 1 < target_input.size(1):
                tokens = target_input[:, t + 1]
                if sampling:
                    gold = torch.rand(tokens.shape, device=tokens.device) < self.teacher_forcing
                    tokens = torch.where(gold, tokens, logits.argmax(-1))
        attention = torch.stack(weight_steps, dim=1) if weight_steps else None
        return Seq2SeqOutput(torch.stack(logits_steps, dim=1), attention)

    def _forward_all_at_once(
        self, target_input: Tensor, state: RecurrentState, memory: Memory
    ) -> Seq2SeqOutput:
        embedded = self.dropout(self.embedding(target_input))  # B x T x E
        hidden, _ = self.rnn(embedded, state)  # B x T x H: one call for every step
        if self.attention is None:
            return Seq2SeqOutput(self.output(self.dropout(hidden)))
        context, weights = self._attend(hidden, memory)  # B x T x H, B x T x S
        assert self.combine is not None
        features = torch.tanh(self.combine(torch.cat([context, hidden], dim=-1)))
        return Seq2SeqOutput(self.output(self.dropout(features)), weights)

    # -- decoding ---------------------------------------------------------------------------

    @torch.no_grad()
    def greedy(self, source: Tensor, source_lengths: Tensor, max_length: int) -> Decoded:
        """Take the most likely token at each step until EOS or ``max_length`` tokens."""
        memory, state = self.encode(source, source_lengths)
        batch = source.size(0)
        feed = self._initial_feed(memory)
        tokens = source.new_full((batch,), self.special.bos)
        done = torch.zeros(batch, dtype=torch.bool, device=source.device)
        lengths = torch.full((batch,), max_length, dtype=torch.long, device=source.device)
        scores = memory.states.new_zeros(batch)
        outputs, weight_steps = [], []
        for t in range(max_length):
            logits, state, feed, weights = self.step(tokens, state, feed, memory)
            log_probs = torch.log_softmax(logits.float(), dim=-1)
            tokens = log_probs.argmax(-1)
            scores = scores + torch.where(done, 0.0, log_probs.gather(1, tokens[:, None])[:, 0])
            tokens = tokens.masked_fill(done, self.special.pad)
            outputs.append(tokens)
            if weights is not None:
                weight_steps.append(weights.masked_fill(done[:, None], 0.0))
            ended = ~done & (tokens == self.special.eos)
            lengths = torch.where(ended, torch.full_like(lengths, t), lengths)
            done = done | ended
            if bool(done.all()):
                break
        attention = torch.stack(weight_steps, dim=1) if weight_steps else None
        return Decoded(torch.stack(outputs, dim=1), lengths, attention, scores)

    @torch.no_grad()
    def beam_search(
        self,
        source: Tensor,
        source_lengths: Tensor,
        max_length: int,
        beam_size: int = 5,
        length_penalty: float = 1.0,
    ) -> Decoded:
        """Batched beam search: B x K hypotheses advance together, one decoder step per
        output position.

        A hypothesis ends when it emits EOS; it is ranked by score / length^length_penalty
        (length counting EOS; 0 ranks by the raw log-probability, 1 by the mean per token).
        At each step the 2K best continuations of the K live hypotheses are taken: those
        ending in EOS are finished, the K best others live on. An example stops when no live
        hypothesis can still beat its best finished one: a live score s <= 0 can at best
        become s / max_length^length_penalty. (Stopping after K finished hypotheses, as some
        toolkits do, can end the search on K unlikely early EOS before the likely hypothesis
        finishes.) At ``max_length`` the live hypotheses count as finished. The best finished
        hypothesis is returned. ``beam_size`` 1 is greedy decoding.
        """
        if beam_size < 1:
            raise ValueError(f"beam_size must be at least 1, got {beam_size}")
        if beam_size == 1:
            greedy = self.greedy(source, source_lengths, max_length)
            ended = greedy.lengths < max_length
            steps = torch.where(ended, greedy.lengths + 1, greedy.lengths).clamp(min=1)
            greedy.scores = greedy.scores / steps.float() ** length_penalty
            return greedy
        memory, state = self.encode(source, source_lengths)
        batch, k, device = source.size(0), beam_size, source.device
        # every example's memory and state repeated K times: row b * K + j = beam j
        memory = memory.repeat_interleave(k)
        state = _map_state(state, lambda s: s.repeat_interleave(k, dim=1))
        feed = self._initial_feed(memory)
        tokens = torch.full((batch * k,), self.special.bos, dtype=torch.long, device=device)
        # only beam 0 is live at the start, so the first step does not pick K copies
        live_scores = torch.full((batch, k), float("-inf"), device=device)
        live_scores[:, 0] = 0.0
        history = torch.zeros(batch * k, 0, dtype=torch.long, device=device)
        weight_history: Tensor | None = None
        best_score = torch.full((batch,), float("-inf"), device=device)
        best_tokens = torch.zeros(batch, max_length, dtype=torch.long, device=device)
        best_lengths = torch.zeros(batch, dtype=torch.long, device=device)
        best_weights = memory.states.new_zeros(batch, max_length, memory.states.size(1))
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        rows = torch.arange(batch, device=device)

        for t in range(max_length):
            logits, state, feed, weights = self.step(tokens, state, feed, memory)
            log_probs = torch.log_softmax(logits.float(), dim=-1)  # BK x V
            vocab = log_probs.size(-1)
            candidates = (live_scores.view(-1, 1) + log_probs).view(batch, k * vocab)
            top_scores, top_index = candidates.topk(min(2 * k, k * vocab), dim=1)  # B x 2K
            beam, token = top_index // vocab, top_index % vocab
            source_row = rows[:, None] * k + beam  # B x 2K rows of the BK tensors
            steps = t + 1  # output tokens, EOS included
            new_history = torch.cat([history[source_row], token.unsqueeze(-1)], dim=-1)
            new_weights = None
            if weights is not None:
                step_weights = weights[source_row].unsqueeze(2)  # B x 2K x 1 x S
                previous = (
                    step_weights.new_zeros(*step_weights.shape[:2], 0, step_weights.size(-1))
                    if weight_history is None
                    else weight_history[source_row]
                )
                new_weights = torch.cat([previous, step_weights], dim=2)  # B x 2K x t+1 x S

            # hypotheses that end here: EOS, or anything at the length limit
            is_eos = token == self.special.eos
            ends = torch.ones_like(is_eos) if t == max_length - 1 else is_eos
            ends = ends & ~done[:, None] & torch.isfinite(top_scores)
            normalised = top_scores / (steps**length_penalty)
            normalised = normalised.masked_fill(~ends, float("-inf"))
            candidate_best, which = normalised.max(dim=1)  # B
            better = candidate_best > best_score
            if bool(better.any()):
                best_score = torch.where(better, candidate_best, best_score)
                chosen = new_history[rows, which]  # B x t+1
                best_tokens[better, :steps] = chosen[better]
                best_tokens[better, steps:] = self.special.pad
                ended_on_eos = is_eos[rows, which]
                best_lengths[better] = torch.where(ended_on_eos, steps - 1, steps)[better]
                if new_weights is not None:
                    best_weights[better, :steps] = new_weights[rows, which][better]
                    best_weights[better, steps:] = 0.0
            if t == max_length - 1:
                break

            # the K best continuations that did not emit EOS live on
            keep_scores = top_scores.masked_fill(is_eos, float("-inf"))
            keep_scores, keep = keep_scores.topk(k, dim=1)  # B x K (positions in the 2K)
            live_scores = keep_scores
            # stop an example once no live hypothesis can beat its best finished one
            best_live = live_scores.max(dim=1).values  # B, <= 0 (or -inf: none left)
            bound = best_live / (max_length**length_penalty) if length_penalty > 0 else best_live
            done = done | (best_score >= bound)
            if bool(done.all()):
                break
            chosen_rows = source_row.gather(1, keep).view(-1)  # BK
            tokens = token.gather(1, keep).view(-1)
            history = new_history.gather(
                1, keep.unsqueeze(-1).expand(-1, -1, new_history.size(-1))
            ).view(batch * k, -1)
            if new_weights is not None:
                index = keep[:, :, None, None].expand(-1, -1, *new_weights.shape[2:])
                weight_history = new_weights.gather(1, index).view(
                    batch * k, *new_weights.shape[2:]
                )
            state = _map_state(state, lambda s, r=chosen_rows: s.index_select(1, r))
            if feed is not None:
                feed = feed.index_select(0, chosen_rows)

        length = int(best_lengths.max().item()) + 1 if batch else 0
        length = min(max(length, 1), max_length)
        attention = None if self.attention is None else best_weights[:, :length]
        return Decoded(best_tokens[:, :length], best_lengths, attention, best_score)


def _map_state(state: RecurrentState, function) -> RecurrentState:
    if isinstance(state, tuple):
        return tuple(function(s) for s in state)  # type: ignore[return-value]
    return function(state)


def _check(cfg: Seq2SeqConfig, attention_cfg: AttentionConfig) -> None:
    if cfg.input_feed and str(attention_cfg.method) == "none":
        raise ConfigError(
            "model.input_feed=true is not allowed with attention=none: it feeds the"
            " attentional vector, so it needs attention"
        )


@register_model(
    "seq2seq",
    schema=Seq2SeqConfig,
    predicts="sequence",
    reads=("tokens",),
    attention="optional",
    check=_check,
)
def build_seq2seq(cfg: Seq2SeqConfig, attention_cfg: AttentionConfig, spec: TaskSpec) -> Seq2Seq:
    """``model=seq2seq`` for ``spec.input_size`` source and ``spec.output_size`` target
    tokens; the attention compares decoder states with encoder states (both hidden_size)."""
    size = cfg.hidden_size
    return Seq2Seq(
        spec.input_size,
        spec.output_size,
        embedding_size=cfg.embedding_size,
        hidden_size=size,
        num_layers=cfg.num_layers,
        cell=str(cfg.cell),
        bidirectional=cfg.bidirectional,
        dropout=cfg.dropout,
        attention=configured_attention(attention_cfg, size, size),
        attention_style=str(cfg.attention_style),
        input_feed=cfg.input_feed,
        teacher_forcing=cfg.teacher_forcing,
        special=spec.special,
    )
