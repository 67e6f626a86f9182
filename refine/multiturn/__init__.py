"""MT-EditFlow: multi-turn RL for sequential editing (placeholder, filled below)."""
