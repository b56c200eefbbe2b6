"""Constrained decoding: grammars built from schemas, regexes, choices and tool-call formats
(`grammars`), compiled once per grammar (`compiler`), followed per request (`guide`) to give
the sampler a mask of the tokens allowed next (`masks`)."""
