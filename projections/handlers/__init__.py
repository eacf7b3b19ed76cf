"""Pure projection logic: one envelope → the rows it writes, MRR of a state, the last-writer-wins order."""
