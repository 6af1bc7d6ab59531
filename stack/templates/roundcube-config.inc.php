<?php
// Roundcube configuration of one stack.mail.MailServer instance, written on every start.
// Options not set here keep the values of defaults.inc.php from the Debian package.

$config = [];

$config['db_dsnw'] = @{db_dsnw};
$config['imap_host'] = @{imap_host};
$config['des_key'] = @{des_key};
$config['session_lifetime'] = @{session_lifetime_minutes};
$config['log_dir'] = @{log_dir};
$config['temp_dir'] = @{temp_dir};
$config['plugins'] = [];
$config['skin'] = 'elastic';
$config['enable_spellcheck'] = false;
$config['product_name'] = 'Connector Warden test mail';
