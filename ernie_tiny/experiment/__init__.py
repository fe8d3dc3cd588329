"""The MITKD claim experiment: vanilla vs multi-task-teacher distillation, same everything else."""
