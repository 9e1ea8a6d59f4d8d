"""The receipt page's words, in English and Spanish: what happened, and what to do now.

Only text, keyed by language. The sentences speak to an attorney, not to a mail
administrator: no SMTP codes, no header names. The steps reuse the notices' own words
(templates/default/not_filed/) for the portal, registration, paper service and contact.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["LANGUAGE_NAMES", "NOTICE_WHY", "WORDS"]

# The language switch names each language in itself.
LANGUAGE_NAMES: Mapping[str, str] = {"en": "English", "es": "Español"}

WORDS: Mapping[str, Mapping[str, str]] = {
    "en": {
        "title": "Receipt {reference}",
        "not_found_title": "No receipt for this reference",
        "not_found": (
            "There is no receipt for this reference. Check that it was copied in full, as it"
            " appears in the reply your mail server received or in our notice. Receipts are"
            " kept for a limited time."
        ),
        "not_filed": "NOT filed or served",
        "not_filed_lead": (
            "Nothing in this e-mail was filed with or served on {office}. The address it was"
            " sent to no longer accepts documents."
        ),
        "passed_on": "Passed on to the office",
        "passed_on_lead": (
            "This address had not been retired yet when the e-mail arrived, so it was passed"
            " on to {office}'s own mail system. This page cannot say whether it was filed."
        ),
        "deferred": "NOT filed: not accepted yet",
        "deferred_lead": (
            "Our server asked your mail server to send this e-mail again later. Nothing was"
            " filed or served; when it is sent again it gets a new reference."
        ),
        "refused_rcpt": (
            "Your mail server was refused at the start, before the message itself was sent:"
            " we never received its content."
        ),
        "received": "The e-mail was received and recorded; its content is not shown here.",
        "what_happened": "What happened",
        "arrived": "Arrived",
        "office": "Office",
        "sent_to": "Sent to",
        "sender_domain": "Sender's domain",
        "null_sender": "(none: the message had no return address)",
        "reference": "Reference",
        "our_answer": "Our server's answer",
        "sha256": "SHA-256 of the message as received",
        "size": "Size as received",
        "sha256_hint": "Compare it with the SHA-256 of your sent copy to be sure it is the same.",
        "notice": "Our notice to you",
        "what_to_do": "What to do now",
        "portal": "Serve or file your documents through the {portal_name}:",
        "register": (
            "Not registered yet? Register before you use the portal; {office} has to verify"
            " your account first, and that can take some time."
        ),
        "instructions": "Before your first filing, read the {portal_name}'s instruction sheet:",
        "paper": "Deadline today? You can still serve {office} on paper:",
        "contact": "Questions:",
        "quote": "Please quote reference {reference} in any question about it.",
        "json": "This receipt as JSON",
        "language": "Language",
    },
    "es": {
        "title": "Constancia {reference}",
        "not_found_title": "No hay constancia para esta referencia",
        "not_found": (
            "No hay ninguna constancia para esta referencia. Compruebe que la copió completa,"
            " tal como figura en la respuesta que recibió su servidor de correo o en nuestro"
            " aviso. Las constancias se conservan durante un tiempo limitado."
        ),
        "not_filed": "NO presentado ni notificado",
        "not_filed_lead": (
            "Nada de este correo se presentó ante {office} ni se le notificó. La dirección a"
            " la que se envió ya no acepta documentos."
        ),
        "passed_on": "Entregado a la oficina",
        "passed_on_lead": (
            "Cuando llegó el correo, esta dirección aún no se había retirado, así que se"
            " entregó al sistema de correo de {office}. Esta página no puede decir si se"
            " presentó."
        ),
        "deferred": "NO presentado: aún no aceptado",
        "deferred_lead": (
            "Nuestro servidor pidió a su servidor de correo que vuelva a enviar este correo más"
            " tarde. No se presentó ni notificó nada; al reenviarse recibe una referencia nueva."
        ),
        "refused_rcpt": (
            "Su servidor de correo fue rechazado al comienzo, antes de enviar el mensaje:"
            " nunca recibimos su contenido."
        ),
        "received": "El correo se recibió y quedó registrado; su contenido no se muestra aquí.",
        "what_happened": "Qué pasó",
        "arrived": "Llegada",
        "office": "Oficina",
        "sent_to": "Enviado a",
        "sender_domain": "Dominio del remitente",
        "null_sender": "(ninguno: el mensaje no tenía dirección de respuesta)",
        "reference": "Referencia",
        "our_answer": "Respuesta de nuestro servidor",
        "sha256": "SHA-256 del mensaje tal como se recibió",
        "size": "Tamaño tal como se recibió",
        "sha256_hint": (
            "Compárelo con el SHA-256 de su copia enviada para confirmar que es el mismo."
        ),
        "notice": "Nuestro aviso",
        "what_to_do": "Qué hacer ahora",
        "portal": "Notifique o presente sus documentos a través del {portal_name}:",
        "register": (
            "¿Aún no se ha registrado? Regístrese antes de usar el portal; {office} tiene que"
            " verificar primero su cuenta, y eso puede llevar tiempo."
        ),
        "instructions": (
            "Antes de su primera presentación, lea la hoja de instrucciones del {portal_name}:"
        ),
        "paper": "¿Vence hoy un plazo? Todavía puede notificar a {office} en papel:",
        "contact": "Consultas:",
        "quote": "Indique la referencia {reference} en cualquier consulta sobre ella.",
        "json": "Esta constancia en JSON",
        "language": "Idioma",
    },
}

# What became of the notice, by status (and, when withheld, by why): plain words.
NOTICE_WHY: Mapping[str, Mapping[str, str]] = {
    "en": {
        "none-refusal": (
            "No notice is sent after a refusal at the start: the refusal your mail server"
            " received is our answer."
        ),
        "none": "No notice is due for this e-mail.",
        "sending": "Our notice is on its way to your mail server.",
        "delivered": "Our notice was delivered to your mail server.",
        "delivered-at": "Our notice was delivered to your mail server on {at}.",
        "failed": (
            "Our notice could not be delivered: your mail server refused it or never answered."
        ),
        "deleted": "Our notice was not sent: it was withdrawn.",
        "withheld": "Our notice was not sent ({why}).",
        "spf-fail": (
            "Our notice was not sent because your domain's SPF record did not authorise the"
            " sending server. We only write to senders whose domain vouches for them."
        ),
        "spf-none": (
            "Our notice was not sent because your domain publishes no SPF record and the e-mail"
            " carried no valid signature (DKIM) of your domain, so we could not confirm it came"
            " from you. We only write to senders whose domain vouches for them."
        ),
        "sender-not-authenticated": (
            "Our notice was not sent because we could not confirm that the e-mail came from"
            " your domain (neither its SPF record nor a DKIM signature vouched for it). We only"
            " write to senders whose domain vouches for them."
        ),
        "duplicate": (
            "Our notice was not sent again: the same e-mail had already been answered with a"
            " notice within the last day."
        ),
        "rate-limit": (
            "Our notice was not sent because too many notices went to your address or domain"
            " within the hour."
        ),
        "null-sender": "Our notice was not sent because the e-mail had no return address.",
        "automatic": (
            "Our notice was not sent because the e-mail was itself sent automatically (an"
            " automatic reply, a mailing list or a system address); answering it could loop."
        ),
        "reply-to-notice": (
            "No second notice was sent: your e-mail answered one of our notices, which already"
            " told you this."
        ),
        "undeliverable": "Our notice was not sent because the return address cannot receive mail.",
        "loop": "Our notice was not sent because the e-mail looked like a mail loop.",
        "temperror": (
            "Our notice was not sent: trouble with the domain name system kept us from checking"
            " your domain, and your mail server was asked to send the e-mail again."
        ),
    },
    "es": {
        "none-refusal": (
            "No se envía aviso tras un rechazo al comienzo: el rechazo que recibió su servidor"
            " de correo es nuestra respuesta."
        ),
        "none": "Este correo no requiere aviso.",
        "sending": "Nuestro aviso va de camino a su servidor de correo.",
        "delivered": "Nuestro aviso se entregó a su servidor de correo.",
        "delivered-at": "Nuestro aviso se entregó a su servidor de correo el {at}.",
        "failed": (
            "Nuestro aviso no pudo entregarse: su servidor de correo lo rechazó o no respondió."
        ),
        "deleted": "Nuestro aviso no se envió: se retiró.",
        "withheld": "Nuestro aviso no se envió ({why}).",
        "spf-fail": (
            "Nuestro aviso no se envió porque el registro SPF de su dominio no autorizó al"
            " servidor que lo envió. Solo escribimos a remitentes a quienes su dominio avala."
        ),
        "spf-none": (
            "Nuestro aviso no se envió porque su dominio no publica registro SPF y el correo no"
            " llevaba una firma válida (DKIM) de su dominio, así que no pudimos confirmar que lo"
            " envió usted. Solo escribimos a remitentes a quienes su dominio avala."
        ),
        "sender-not-authenticated": (
            "Nuestro aviso no se envió porque no pudimos confirmar que el correo viniera de su"
            " dominio (ni su registro SPF ni una firma DKIM lo avalaron). Solo escribimos a"
            " remitentes a quienes su dominio avala."
        ),
        "duplicate": (
            "Nuestro aviso no se volvió a enviar: ese mismo correo ya había recibido un aviso en"
            " el último día."
        ),
        "rate-limit": (
            "Nuestro aviso no se envió porque su dirección o su dominio recibieron demasiados"
            " avisos en la última hora."
        ),
        "null-sender": (
            "Nuestro aviso no se envió porque el correo no tenía dirección de respuesta."
        ),
        "automatic": (
            "Nuestro aviso no se envió porque el correo se envió automáticamente (una respuesta"
            " automática, una lista de correo o una dirección del sistema); responderlo podría"
            " crear un bucle."
        ),
        "reply-to-notice": (
            "No se envió un segundo aviso: su correo respondía a uno de nuestros avisos, que ya"
            " se lo indicaba."
        ),
        "undeliverable": (
            "Nuestro aviso no se envió porque la dirección de respuesta no puede recibir correo."
        ),
        "loop": "Nuestro aviso no se envió porque el correo parecía un bucle de correo.",
        "temperror": (
            "Nuestro aviso no se envió: un problema del sistema de nombres de dominio nos impidió"
            " comprobar su dominio, y se pidió a su servidor de correo que lo reenviara."
        ),
    },
}
