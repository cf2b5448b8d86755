"""Everything that talks to TVM: tensor expressions, default schedules, building."""
