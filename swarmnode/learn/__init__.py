"""Learning: tasks and verifiers, the policy, SAPO, the intake of peers' rollouts, evaluation, checkpoints."""
