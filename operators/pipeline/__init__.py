"""The pipeline's pure logic: settings, layout, planning, blessing, conditions, decisions."""
