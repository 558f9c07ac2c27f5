"""Serving: a bundle as an NVIDIA Triton model repository (``repository``: ``icrt triton``), served by PyTriton
(``server``: ``icrt serve``), scored through by a client (``client``: ``icrt score --url``); what the servers take
(``limits``); ``icrt serve`` as a child process (``process``: tests, benchmarks). The request and response tensors
are the score record's (``runtime.bundle.records``)."""
