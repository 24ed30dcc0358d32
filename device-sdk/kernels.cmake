# Kernel sources of flotilla_model, with per-ISA compile flags (runtime dispatch).
