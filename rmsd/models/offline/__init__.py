"""The offline students: built from a config with random weights and a locally trained tokenizer.

No weights can be downloaded where rmsd is developed and tested, so a student is written as a
`from_pretrained` folder by these builders (one module per family, a shared vocabulary, and an
optional pre-training on synthvid) and then loaded by the same code that loads a real checkpoint.
"""
