"""``oncoscope locate``: lesion candidates, their size and Couinaud segment, in unlabelled CT."""
