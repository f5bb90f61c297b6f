from django.apps import AppConfig


class TelephonyConfig(AppConfig):
    name = "telephony"
    verbose_name = "Telephony"

    def ready(self) -> None:
        """Refuse to start with malformed business hours: a typo must not silently close the line."""
        from telephony.services import business_hours

        business_hours()
